"""prompting: which way of prompting a language model works best with a handful of examples."""

from .backbone import LanguageModel, ModelNotAvailableError
from .data import DataError, Example, Task, compute_metrics, load_examples, load_task, sample_kshot
from .methods import PromptMethod
from .template import Template, TemplateError
from .verbalizer import Verbalizer, VerbalizerError

__version__ = "0.1.0"

__all__ = [
    "LanguageModel", "ModelNotAvailableError", "Example", "Task", "DataError", "load_task",
    "load_examples", "sample_kshot", "compute_metrics", "Template", "TemplateError", "Verbalizer",
    "VerbalizerError", "PromptMethod",
]
