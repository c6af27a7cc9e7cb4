"""The settings of every built-in method: one typed config class each (see :mod:`prompting.core.settings`).

Kept apart from the method modules, which need torch, so that a YAML config is checked without
loading it. ``prompting methods`` prints every method's settings as the table in docs/methods.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from prompting.core.demonstrations import SELECTIONS
from prompting.core.settings import MethodConfig, Settings, setting

__all__ = ["MethodConfig", "PromptConfig", "DemonstrationSettings", "ICLConfig", "ManualConfig", "IPetConfig", "SoftConfig", "PTuningConfig", "PrefixConfig", "AutoPromptConfig",
           "BUILTIN_CONFIGS", "SOFT_INITS", "ENCODERS", "PREFIX_INITS"]

SOFT_INITS = ("text", "vocab", "uniform")
ENCODERS = ("lstm", "mlp")
PREFIX_INITS = ("random", "vocab", "text")
AUTOPROMPT_POSITIONS = ("cycle", "random", "all")
AUTOPROMPT_VOCABULARIES = ("words", "tokens")
AUTOPROMPT_SELECT = ("dev", "last")

#: what a sweep of a trained method samples unless the method says otherwise
TRAIN_SPACE = {"lr": {"low": 1e-6, "high": 1e-4, "log": True}, "max_steps": {"low": 8, "high": 64, "step": 8},
               "batch_size": {"choices": [4, 8, 16]}}


def _per_class() -> int:
    return setting(1, "demonstrations per class", minimum=1, search={"choices": [1, 2, 4]})


def _selection() -> str:
    return setting("random", "which training examples: one random set for every query (`random`), or per "
                             "query those most like it by TF-IDF cosine (`similarity`)", choices=SELECTIONS,
                   search={"choices": list(SELECTIONS)})


def _separator() -> str:
    return setting("\n\n", "text after each demonstration")


@dataclass
class DemonstrationSettings(Settings):
    """A method entry's ``demonstrations: {k: 1, selection: random}`` (see :mod:`prompting.core.demonstrations`)."""

    owner: ClassVar[str] = "demonstrations"

    k: int = _per_class()
    selection: str = _selection()
    separator: str = _separator()


@dataclass
class PromptConfig(MethodConfig):
    """Settings every template-based method has: demonstrations in front of each input (LM-BFF)."""

    demonstrations: DemonstrationSettings | None = setting(
        None, "training examples put in front of every input, rendered with the template and their label word: "
              "`{k: 1, selection: random}` (or `similarity`; `separator` as for `icl`), LM-BFF's \"+ demos\"")

    def demonstration_settings(self) -> DemonstrationSettings | None:
        return self.nested("demonstrations")


@dataclass
class ICLConfig(MethodConfig):
    method: ClassVar[str] = "icl"
    summary: ClassVar[str] = ("in-context learning: `k` labelled training examples per class before each input, "
                              "rendered with its template; nothing is trained (the training seed picks the "
                              "demonstrations and their order)")
    train_defaults: ClassVar[dict] = {"tune_lm": False}
    demonstrations_always: ClassVar[bool] = True

    k: int = _per_class()
    selection: str = _selection()
    sets: int = setting(1, "demonstration sets whose label probabilities are averaged (LM-BFF: 16)", minimum=1)
    separator: str = _separator()


@dataclass
class ManualConfig(PromptConfig):
    method: ClassVar[str] = "manual"
    summary: ClassVar[str] = ("PET: the template and verbalizer as written; `train: false` is zero-shot, "
                              "`train: true` fine-tunes the LM")
    # PET fine-tuning keeps the best *trained* state: its untrained state is the zero-shot run, and with
    # 32 dev examples the zero-shot state can win on dev and lose on test (docs/methods.md)
    train_defaults: ClassVar[dict] = {"lr": 1e-5, "tune_lm": True, "select_untrained": False}
    train_space: ClassVar[dict] = TRAIN_SPACE


@dataclass
class IPetConfig(ManualConfig):
    method: ClassVar[str] = "ipet"
    summary: ClassVar[str] = ("iPET (Schick & Schütze): after PET (generation 0), generations of one model per "
                              "pattern, each trained on the K-shot examples and unlabelled examples that other "
                              "patterns' models of the generation before labelled, then distilled into one model "
                              "(`distill:`); needs the task's `unlabeled:`")

    # the recipe, not the model: a saved iPET model is a PET model and does not keep them
    generations: int = setting(2, "generations after PET's own (generation 0); PET's code counts generation 0, so "
                                  "its default of 3 is 2 here", minimum=1, saved=False)
    ensemble_share: float = setting(0.25, "share of the other patterns' models whose ensemble labels a model's "
                                          "examples, at least one (PET: 0.25)", positive=True, maximum=1, saved=False)
    growth: float = setting(5.0, "the factor the training set grows by each generation, its label distribution "
                                 "that of the K-shot examples (PET: 5)", minimum=1, saved=False)


@dataclass
class SoftConfig(PromptConfig):
    method: ClassVar[str] = "soft"
    slots: ClassVar[tuple[str, ...]] = ("soft",)
    summary: ClassVar[str] = "soft prompt tuning (Lester et al.): trainable input vectors, the LM frozen"
    train_defaults: ClassVar[dict] = {"lr": 3e-2, "tune_lm": False}
    train_space: ClassVar[dict] = {**TRAIN_SPACE, "lr": {"low": 1e-3, "high": 3e-1, "log": True},
                                   "soft_length": {"low": 1, "high": 16}}

    prompt_tokens: int | None = setting(None, "vectors put in front of a template without `{soft}` slots "
                                              "(8 when not given)", minimum=1,
                                        search={"low": 2, "high": 32, "log": True})
    init: str = setting("text", "start: the template's words (`text`), frequent tokens (`vocab`) or noise "
                                "(`uniform`)", choices=SOFT_INITS, search={"choices": ["text", "vocab"]})
    init_text: str | None = setting(None, "words to start `init: text` from instead of the template's")


@dataclass
class PTuningConfig(PromptConfig):
    method: ClassVar[str] = "ptuning"
    slots: ClassVar[tuple[str, ...]] = ("soft",)
    summary: ClassVar[str] = "P-tuning (Liu et al.): the `{soft}` slots filled by an LSTM or MLP prompt encoder"
    train_defaults: ClassVar[dict] = {"lr": 1e-3, "tune_lm": False, "lm_lr": 1e-5}
    train_space: ClassVar[dict] = {**TRAIN_SPACE, "lr": {"low": 1e-4, "high": 3e-2, "log": True},
                                   "soft_length": {"low": 1, "high": 8}}

    # A bottleneck encoder whose output is added to its inputs: at K = 16 the paper's encoder (as wide as
    # the embeddings, its output unrelated to its inputs; 11% of SmolLM2's weights) learned little and lost
    # a text start (benchmarks/learning_check.py: SST-2 from the manual words 0.498 against 0.774 zero-shot)
    encoder: str = setting("lstm", "the prompt encoder", choices=ENCODERS, search={"choices": list(ENCODERS)})
    hidden_size: int | None = setting(64, "the encoder's width (null: the LM's embedding size, the paper's)",
                                      minimum=1, search={"choices": [64, 128, 256]})
    residual: bool = setting(True, "the encoder's output is added to its inputs, which then start as the prompt "
                                   "(false: the paper's encoder, whose output replaces them)")
    input_lr: float | None = setting(None, "learning rate of the encoder's input vectors (null: a soft prompt's "
                                           "rate when `residual`, the inputs being the prompt; else the training "
                                           "rate)", positive=True,
                                     search={"low": 1e-3, "high": 1e-1, "log": True}, saved=False)


@dataclass
class PrefixConfig(PromptConfig):
    method: ClassVar[str] = "prefix"
    summary: ClassVar[str] = "prefix-tuning (Li & Liang): trainable keys and values at every layer, the LM frozen"
    # tuned on SST-2 K=16 dev, data seed 13 (the tuning table in the history of
    # benchmarks/results/learning_check.md, commit 55b1722): Adam moves every weight of the wide MLP
    # output layer at once, and from 3e-4 up the loss jumped in the first steps
    train_defaults: ClassVar[dict] = {"lr": 1e-4, "tune_lm": False}
    train_space: ClassVar[dict] = {**TRAIN_SPACE, "lr": {"low": 3e-5, "high": 3e-3, "log": True}}

    prefix_length: int | None = setting(None, "prefix positions (10, or the moved words' length with "
                                              "`init: text`)", minimum=1, search={"low": 2, "high": 32, "log": True})
    prefix_projection: bool = setting(True, "train through an MLP (the paper's reparameterisation)")
    prefix_hidden_size: int = setting(512, "the MLP's hidden width", minimum=1, search={"choices": [128, 256, 512]})
    init: str = setting("random", "start: random vectors, the LM's keys/values of frequent tokens (`vocab`) or "
                                  "of real words (`text`)", choices=PREFIX_INITS)
    init_text: str | None = setting(None, "words to start `init: text` from instead of the template's")


@dataclass
class AutoPromptConfig(PromptConfig):
    method: ClassVar[str] = "autoprompt"
    slots: ClassVar[tuple[str, ...]] = ("trigger",)
    summary: ClassVar[str] = "AutoPrompt (Shin et al.): `{trigger:N}` tokens found by gradient-guided search"
    train_defaults: ClassVar[dict] = {"tune_lm": False, "batch_size": 16}
    train_space: ClassVar[dict] = {"trigger_length": {"low": 1, "high": 8}, "batch_size": {"choices": [8, 16, 32]}}

    iterations: int = setting(20, "search iterations at most (one position tried per iteration, or every "
                                  "position with `positions: all`); the search stops earlier when no position "
                                  "has a better swap", minimum=0, search={"low": 5, "high": 40, "step": 5})
    num_candidates: int = setting(10, "HotFlip candidates tried per position and iteration", minimum=1,
                                  search={"choices": [5, 10, 20]})
    max_candidates: int | None = setting(None, "after a pass over the positions without a better swap, try the "
                                               "next `num_candidates` HotFlip ranks, down to this rank (none: stop)",
                                         minimum=1)
    init: str = setting("the", "what every trigger starts as: a one-token word, `mask` or `random`")
    score_examples: int = setting(32, "training examples that judge the candidates: all of them when there are no "
                                      "more (the search then never raises the training loss), else a new batch "
                                      "apart from the gradient's each iteration", minimum=1)
    gradient_examples: int = setting(32, "training examples whose gradient ranks the HotFlip candidates (all of "
                                         "them when there are no more)", minimum=1)
    positions: str = setting("cycle", "which trigger positions an iteration tries: each in turn (`cycle`), one "
                                      "drawn at random (`random`) or every one (`all`, the best swap of all)",
                             choices=AUTOPROMPT_POSITIONS)
    vocabulary: str = setting("words", "trigger tokens: alphabetic whole words that tokenise back to themselves "
                                       "(`words`) or any token that starts a word (`tokens`)",
                              choices=AUTOPROMPT_VOCABULARIES)
    select: str = setting("last", "the trigger kept: the search's last, its lowest training loss (`last`), or "
                                  "the start or an accepted swap, best on dev (`dev`)", choices=AUTOPROMPT_SELECT)
    score_rows: int = setting(256, "rows of one forward pass while scoring candidates (candidates x examples)",
                              minimum=1)
    exclude_special: bool = setting(True, "keep special tokens out of the candidates")
    exclude_subwords: bool = setting(True, "keep pieces that do not start a word out of the candidates")
    exclude_label_words: bool = setting(True, "keep the label words out of the candidates")
    seed: int = setting(0, "seed of `init: random`")


BUILTIN_CONFIGS = (ManualConfig, IPetConfig, SoftConfig, PTuningConfig, PrefixConfig, AutoPromptConfig, ICLConfig)
