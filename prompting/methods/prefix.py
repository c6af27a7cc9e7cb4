"""Prefix-tuning (Li & Liang 2021): trainable keys and values at every attention layer; the LM is frozen.

    method = PrefixTuning(lm, "Review: {text_a}\\nSentiment: {mask}", verbalizer, prefix_length=10)

Every attention layer of the LM attends to ``prefix_length`` learned key/value vectors before the
input (the backbone puts them in the model's key/value cache, see ``LanguageModel.forward``; this
works the same way for causal and masked LMs, and the prefix takes no positions). As in the paper
the vectors are reparameterised while training (``prefix_projection: true``): a small matrix
[prefix_length, hidden] goes through an MLP (hidden -> ``prefix_hidden_size`` -> tanh -> keys and
values of all layers), which trains more stably than free vectors. ``prefix_projection: false``
learns the key/value vectors directly. A saved prompt keeps only the MLP's output.

``init: random`` starts from random vectors (N(0, 1) inputs through the MLP, or N(0, 1) keys and
values); ``init: vocab`` from the LM's own keys and values for ``prefix_length`` tokens drawn at random
among the 5,000 most frequent (as soft prompts' ``vocab`` init), placed just before the input: random,
but activations of the kind every layer expects; ``init: text`` from the LM's own keys and values for
real words, the paper's recommendation for small data. With the MLP, its output layer is solved by
least squares so that it starts at exactly those keys and values (when ``prefix_length <=
prefix_hidden_size``). Which words:

- ``init_text`` when given, repeated to ``prefix_length`` tokens (default 10); the template is used as
  it is;
- else, on a causal LM with rotary positions (SmolLM2, Llama, Qwen, Gemma), the template's leading
  words: ``"Review: {text_a}\nSentiment: {mask}"`` moves ``Review:`` (and any start-of-text token)
  out of the input into the prefix, whose keys and values are those the LM computes for them just
  before the input. The prefix then starts as exactly the manual prompt: step 0 scores every example
  as the manual template does, and training can only be selected over it if dev says it is better.
  ``prefix_length`` defaults to those words' token count; a longer prefix repeats the words in front;
- else (masked LMs, absolute positions, a template that starts with a slot) the template's words,
  repeated to ``prefix_length`` tokens, in front of the whole template.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from prompting.lm.model import LanguageModel
from prompting.methods.base import PromptMethod
from prompting.methods.configs import PREFIX_INITS, PrefixConfig
from prompting.methods.soft import common_token_ids, template_words

__all__ = ["PrefixTuning", "PREFIX_INITS", "flat_key_values", "split_key_values"]


def flat_key_values(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Keys and values [layers, kv_heads, P, head_dim] -> [P, layers * 2 * kv_heads * head_dim], the
    layout of one prefix position's vector (PEFT's prefix-tuning layout too)."""
    return torch.stack([keys, values]).permute(3, 1, 0, 2, 4).reshape(keys.shape[2], -1)


def split_key_values(flat: torch.Tensor, kv_shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`flat_key_values`: keys and values, each [layers, kv_heads, P, head_dim]."""
    layers, heads, head_dim = kv_shape
    both = flat.view(flat.shape[0], layers, 2, heads, head_dim).permute(2, 1, 3, 0, 4)
    return both[0], both[1]


def forward_with_prefix(lm: LanguageModel, key_values, inputs_embeds, attention_mask, position_ids, logits_to_keep,
                        **kwargs):
    """The LM's logits with one prefix, ``key_values`` = (keys, values) each [layers, kv_heads, P, head_dim],
    before every row of the batch (``kwargs``: an encoder-decoder LM's decoder inputs)."""
    size = inputs_embeds.shape[0]
    keys, values = (t.to(inputs_embeds.dtype).unsqueeze(1).expand(-1, size, -1, -1, -1) for t in key_values)
    return lm.forward(inputs_embeds, attention_mask, position_ids, logits_to_keep, prefix=(keys, values), **kwargs)


class PrefixTuning(PromptMethod):
    """Li & Liang's prefix-tuning: key/value vectors at every layer, via an MLP while training."""

    name = "prefix"
    config_class = PrefixConfig

    def setup(self) -> None:
        config, lm = self.config, self.lm
        # the ids moved out of the input into the prefix (init 'text' from the template's leading words)
        self.moved_ids = self._move_leading_words() if config.init == "text" and config.init_text is None else None
        self.config = dataclasses.replace(config, prefix_length=self._prefix_length(config.prefix_length))
        layers, heads, head_dim = lm.kv_shape
        width = layers * 2 * heads * head_dim  # keys and values of every layer, for one prefix position
        target = self._text_key_values() if config.init in ("text", "vocab") else None
        if config.prefix_projection:
            hidden = lm.embeddings.embedding_dim
            self.prefix_inputs = nn.Parameter(torch.randn(self.prefix_length, hidden).to(lm.device))
            self.prefix_mlp = nn.Sequential(nn.Linear(hidden, config.prefix_hidden_size), nn.Tanh(),
                                            nn.Linear(config.prefix_hidden_size, width)).to(lm.device)
            if target is not None:
                self._solve_output_layer(target)
            self.register_parameter("prefix", None)
        else:
            start = target if target is not None else torch.randn(self.prefix_length, width, device=lm.device)
            self.prefix = nn.Parameter(start)

    @property
    def prefix_length(self) -> int:
        return self.config.prefix_length

    def _prefix_length(self, given: int | None) -> int:
        """The prefix length: as given, else the moved words' length (init 'text') or 10."""
        if given is None:
            return len(self.moved_ids) if self.moved_ids is not None else 10
        if self.moved_ids is not None and given < len(self.moved_ids):
            raise ValueError(
                f"prefix_length={given} is too short for the template's leading words "
                f"{self.template.split_leading_text()[0]!r} ({len(self.moved_ids)} tokens with the start-of-text "
                f"tokens) that init 'text' moves into the prefix; give at least {len(self.moved_ids)}, leave "
                "prefix_length out, or give init_text")
        return given

    # ------------------------------------------------------------------ the prefix
    def prefix_vectors(self) -> torch.Tensor:
        """[prefix_length, layers * 2 * kv_heads * head_dim]: keys and values of every layer, per position."""
        if self.prefix is not None:
            return self.prefix
        return self.prefix_mlp(self.prefix_inputs)

    def prefix_key_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values, each [layers, kv_heads, prefix_length, head_dim]."""
        return split_key_values(self.prefix_vectors(), self.lm.kv_shape)

    def lm_prefix(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.prefix_key_values()

    def forward_lm(self, lm: LanguageModel, inputs_embeds, attention_mask, position_ids, logits_to_keep, **kwargs):
        return forward_with_prefix(lm, self.lm_prefix(), inputs_embeds, attention_mask, position_ids,
                                   logits_to_keep, **kwargs)

    # ------------------------------------------------------------------ initialisation
    def _move_leading_words(self) -> list[int] | None:
        """Encode the input without the template's leading words (and start-of-text tokens), and
        return their ids, which the prefix then stands for; None where that cannot be exact."""
        split = self.template.split_leading_text()
        if split is None or not self.lm.causal or not self.lm.relative_positions:
            return None
        words, rest = split
        whole = self.encoder
        # the words alone tokenise as the template's first piece does (no space before them)
        moved = list(whole.prefix_ids) + list(self.lm.tokenizer(words, add_special_tokens=False)["input_ids"])
        self.moved_specials = len(whole.prefix_ids)
        self.encoder = self.lm.template_encoder(rest, whole.max_length, chat=self.chat)
        self.encoder.reserve, self.encoder.prefix_ids = whole.reserve, []
        return moved

    def _init_ids(self) -> torch.Tensor:
        if self.moved_ids is not None:
            # as in the template: start-of-text tokens, the words; extra positions repeat the words between
            specials, words = self.moved_ids[:self.moved_specials], self.moved_ids[self.moved_specials:]
            extra = [words[i % len(words)] for i in range(self.prefix_length - len(self.moved_ids))]
            return torch.tensor(specials + extra + words, device=self.lm.device)
        if self.config.init == "vocab":
            return common_token_ids(self.lm, self.prefix_length).to(self.lm.device)
        text = self.config.init_text if self.config.init_text is not None else template_words(self.template)
        ids = self.lm.tokenizer(text, add_special_tokens=False)["input_ids"] if text.strip() else []
        if not ids:
            raise ValueError(f"init 'text' needs words: template {self.template.text!r} has none and "
                             "init_text is not given; give init_text or use init 'random'")
        return torch.tensor([ids[i % len(ids)] for i in range(self.prefix_length)], device=self.lm.device)

    def _text_key_values(self) -> torch.Tensor:
        """[prefix_length, width]: the LM's own keys and values for the init tokens, in prefix layout
        (moved words and random tokens: numbered just before the input, which is numbered from 0,
        where the model's positions are relative)."""
        ids = self._init_ids().unsqueeze(0)
        before = self.moved_ids is not None or (self.config.init == "vocab" and self.lm.relative_positions)
        start = -ids.shape[1] if before else 0
        keys, values = self.lm.key_values(ids, start=start)  # [layers, heads, P, head_dim]
        return flat_key_values(keys, values).float()

    @torch.no_grad()
    def _solve_output_layer(self, target: torch.Tensor) -> None:
        first, _, last = self.prefix_mlp
        hidden = torch.tanh(first(self.prefix_inputs))  # [P, prefix_hidden_size]
        last.weight.copy_((torch.linalg.pinv(hidden) @ target).T)
        last.bias.zero_()

    # ------------------------------------------------------------------ saving
    @torch.no_grad()
    def prompt_state(self) -> dict[str, torch.Tensor]:
        keys, values = self.prefix_key_values()
        return {"prefix_keys": keys.detach().clone(), "prefix_values": values.detach().clone()}

    def load_prompt_state(self, state: dict[str, torch.Tensor]) -> None:
        expected = (*self.lm.kv_shape[:2], self.prefix_length, self.lm.kv_shape[2])
        for name in ("prefix_keys", "prefix_values"):
            if tuple(state[name].shape) != expected:
                raise ValueError(f"saved {name} has shape {tuple(state[name].shape)}; this model needs {expected}")
        flat = flat_key_values(state["prefix_keys"], state["prefix_values"])
        if self.prefix is None:  # folded: the MLP's output is all a loaded prompt needs
            del self.prefix_mlp, self.prefix_inputs
        self.prefix = nn.Parameter(flat.float().to(self.lm.device))
