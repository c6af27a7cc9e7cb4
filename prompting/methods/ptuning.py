"""P-tuning (Liu et al. 2021, "GPT understands, too"): continuous prompt tokens from a prompt encoder.

    method = PTuning(lm, "{soft:3} {text_a} {soft:3} It was {mask}", verbalizer)          # LSTM
    method = PTuning(lm, '{soft:"Review:"} {text_a} {soft:"Sentiment:"} {mask}', verbalizer, encoder="mlp")

The template's ``{soft}`` slots (anchor words may stand between them) are filled by a prompt
encoder: trainable input vectors, one per soft token, passed through a two-layer bidirectional LSTM
and a two-layer MLP head (the paper's choice, ``encoder: lstm``), or through an MLP only
(``encoder: mlp``). The encoder lets the tokens depend on each other, which the paper found to train
more stably than free vectors (see :mod:`prompting.methods.soft` for those).

The encoder's input vectors start as the embeddings of a ``{soft:"text"}`` slot's words, or random
for a ``{soft:N}`` slot (N(0, 1), as ``torch.nn.Embedding``). The encoder's output at step 0 is
then unrelated to those words; ``residual: true`` (Razdaibiedina et al. 2023) adds the inputs to the
output and starts the head's last layer at zero, so the prompt starts as exactly its input vectors
(the words, or random ones with the vocabulary's spread) and the encoder learns a correction.

The LM is frozen by default; the paper also tunes it: ``TrainConfig(tune_lm=True, lm_lr=1e-5)``.
A saved prompt keeps only the encoder's output (see :mod:`prompting.methods.saving`).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from prompting.lm.model import LanguageModel
from prompting.core.template import PromptBatch, Template, TemplateError
from prompting.methods.base import PromptMethod
from prompting.methods.configs import ENCODERS, PTuningConfig, SoftConfig
from prompting.methods.soft import place_soft, soft_slot_counts

__all__ = ["PTuning", "PromptEncoder", "ENCODERS"]


class PromptEncoder(nn.Module):
    """Trainable input vectors [n, H] -> prompt vectors [n, H], through an LSTM + MLP head or an MLP.

    ``residual``: the output is ``inputs + head(...)`` with the head's last layer starting at zero,
    so the encoder starts as the identity (Razdaibiedina et al. 2023, residual reparameterisation).
    """

    def __init__(self, inputs: torch.Tensor, hidden_size: int, kind: str = "lstm", residual: bool = False):
        super().__init__()
        if kind not in ENCODERS:
            raise ValueError(f"encoder={kind!r} is not valid; choose one of {', '.join(ENCODERS)}")
        dim = inputs.shape[1]
        self.kind, self.residual = kind, residual
        self.inputs = nn.Parameter(inputs)
        if kind == "lstm":
            self.lstm = nn.LSTM(dim, hidden_size, num_layers=2, bidirectional=True, batch_first=True)
            self.head = nn.Sequential(nn.Linear(2 * hidden_size, 2 * hidden_size), nn.ReLU(),
                                      nn.Linear(2 * hidden_size, dim))
        else:
            self.head = nn.Sequential(nn.Linear(dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, hidden_size),
                                      nn.ReLU(), nn.Linear(hidden_size, dim))
        if residual:
            nn.init.zeros_(self.head[-1].weight)
            nn.init.zeros_(self.head[-1].bias)

    def forward(self) -> torch.Tensor:
        hidden = self.inputs
        if self.kind == "lstm":
            hidden = self.lstm(hidden.unsqueeze(0))[0].squeeze(0)
        return self.inputs + self.head(hidden) if self.residual else self.head(hidden)


class PTuning(PromptMethod):
    """P-tuning: the ``{soft}`` slots are filled by a prompt encoder (LSTM or MLP)."""

    name = "ptuning"
    reuses_frozen_text = True
    config_class = PTuningConfig

    def adapt(self, template: Template, config: PTuningConfig) -> tuple[Template, PTuningConfig]:
        if not template.has_soft:
            raise TemplateError(
                f"template {template.text!r} has no {{soft}} slot for P-tuning to fill; add some, "
                "e.g. \"{soft:3} {text_a} {soft:3} It was {mask}\" or '{soft:\"It was\"} {mask}'")
        return template, config

    def setup(self) -> None:
        hidden_size = self.config.hidden_size or self.lm.embeddings.embedding_dim
        self.config = dataclasses.replace(self.config, hidden_size=hidden_size)  # a saved prompt says which
        self.prompt_encoder: PromptEncoder | None = PromptEncoder(self._encoder_inputs(), hidden_size,
                                                                  self.config.encoder, self.config.residual)
        self.prompt_encoder.to(self.lm.device)
        self.register_parameter("folded", None)  # the encoder's output, once loaded from a saved prompt

    def _encoder_inputs(self) -> torch.Tensor:
        weight = self.lm.embeddings.weight.detach()
        # residual: the inputs are the prompt at step 0, so random ones take the vocabulary's spread
        scale = weight.float().std().item() if self.config.residual else 1.0
        vectors = []
        for own, count in zip(self.encoder.soft_init_ids, soft_slot_counts(self.encoder)):
            if own is not None:
                vectors.append(weight[torch.tensor(own, device=weight.device)].float())
            else:
                vectors.append(scale * torch.randn(count, weight.shape[1]).to(weight.device))
        return torch.cat(vectors).clone()

    def parameter_groups(self, lr: float, lm_lr: float | None = None, tune_lm: bool = False) -> list[dict]:
        groups = super().parameter_groups(lr, lm_lr, tune_lm)
        rate = self.config.input_lr or (SoftConfig.train_defaults["lr"] if self.config.residual else None)
        if rate is None or self.prompt_encoder is None:
            return groups
        inputs = self.prompt_encoder.inputs
        own = groups[0]  # the method's parameters come first
        own["params"] = [p for p in own["params"] if p is not inputs]
        return [{"params": [inputs], "lr": rate, "name": f"{self.name}.inputs"}, *groups]

    def prompt_embeddings(self) -> torch.Tensor:
        """[n_soft, H]: the vectors that fill the soft slots."""
        return self.folded if self.folded is not None else self.prompt_encoder()

    def embed(self, lm: LanguageModel, input_ids: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
        return place_soft(super().embed(lm, input_ids, batch), batch.soft_positions, self.prompt_embeddings())

    @torch.no_grad()  # as when predicting: the LSTM's no-grad kernel rounds differently
    def prompt_state(self) -> dict[str, torch.Tensor]:
        return {"soft_prompt": self.prompt_embeddings().detach().clone()}

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = (sum(soft_slot_counts(self.encoder)), self.lm.embeddings.embedding_dim)
        prompt = state["soft_prompt"]
        if tuple(prompt.shape) != expected:
            raise ValueError(f"saved soft_prompt has shape {tuple(prompt.shape)}; this template and model need {expected}")
        self.prompt_encoder = None  # folded: the encoder's output is all a loaded prompt needs
        self.folded = nn.Parameter(prompt.float().to(self.lm.device))
