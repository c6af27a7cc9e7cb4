"""The template language: plain text with brace slots, parsed once, encoded to token ids.

    "{text_a} It was {mask}."
    "Review: {text_a}\\nSentiment: {mask}"
    "{soft:3} {text_a} {soft:\\"It was\\"} {mask}"
    "{text_a} {trigger:5} {mask}"

Slots: ``{field}`` (any example field, the only parts that are truncated), ``{mask}`` (where the
label word is predicted), ``{soft}`` / ``{soft:N}`` / ``{soft:"text"}`` (continuous prompt tokens),
``{trigger:N}`` (discrete tokens searched by AutoPrompt). ``{{`` and ``}}`` are literal braces.

Whitespace between parts belongs to the part that follows it, as a BPE tokenizer sees it: in
``"It was {mask}"`` the label word is tokenised as ``" great"``, in ``"Review: {text_a}"`` the
text as ``" a fine film"``. Tokenising part by part therefore gives the same ids as tokenising the
whole sentence, while every slot keeps an exact position.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

if TYPE_CHECKING:  # torch is imported where tensors are made: parsing a template needs none
    import torch

__all__ = [
    "TemplateError", "Template", "from_openprompt", "Text", "Field", "Mask", "Soft", "Trigger",
    "Encoding", "TemplateEncoder", "PromptBatch", "FrozenSpans", "collate",
]


class TemplateError(ValueError):
    """A template string that cannot be parsed or does not fit the task or model."""


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Field:
    name: str


@dataclass(frozen=True)
class Mask:
    pass


@dataclass(frozen=True)
class Soft:
    count: int
    init_text: str | None = None


@dataclass(frozen=True)
class Trigger:
    count: int


Part = Text | Field | Mask | Soft | Trigger

_SLOT = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SOFT = re.compile(r'^soft(?::\s*(?:(\d+)|"([^"]*)"))?$')
_TRIGGER = re.compile(r"^trigger(?::\s*(\d+))?$")


def _slot_keyword(slot: str) -> str:
    """``soft`` for ``soft``, ``soft:4``, ``soft 4``; ``softness`` stays a field name."""
    return re.match(r"[A-Za-z0-9_]*", slot).group(0)


def _parse_slot(body: str, template: str) -> Part:
    slot = body.strip()
    if slot == "mask":
        return Mask()
    if _slot_keyword(slot) == "soft":
        m = _SOFT.match(slot)
        if not m:
            raise TemplateError(
                f"template {template!r}: slot {{{body}}} is not valid; "
                'use {soft}, {soft:N} with N >= 1, or {soft:"text to initialise from"}')
        if m.group(2) is not None:
            if not m.group(2).strip():
                raise TemplateError(f"template {template!r}: {{soft:\"\"}} needs non-empty text")
            return Soft(count=0, init_text=m.group(2))
        count = int(m.group(1) or 1)
        if count < 1:
            raise TemplateError(f"template {template!r}: {{{body}}} needs a count >= 1")
        return Soft(count=count)
    if _slot_keyword(slot) == "trigger":
        m = _TRIGGER.match(slot)
        if not m or int(m.group(1) or 1) < 1:
            raise TemplateError(
                f"template {template!r}: slot {{{body}}} is not valid; use {{trigger:N}} with N >= 1")
        return Trigger(count=int(m.group(1) or 1))
    if _FIELD_NAME.match(slot):
        return Field(slot)
    raise TemplateError(
        f"template {template!r}: slot {{{body}}} is not valid; expected an example field such as "
        '{text_a}, or {mask}, {soft}, {soft:N}, {soft:"text"}, {trigger:N}')


def _parse(text: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    buffer: list[str] = []
    pos = 0
    for m in _SLOT.finditer(text):
        buffer.append(text[pos:m.start()])
        pos = m.end()
        token = m.group(0)
        if token in ("{{", "}}"):
            buffer.append(token[0])
        elif token in ("{", "}"):
            raise TemplateError(
                f"template {text!r}: unmatched {token!r} at character {m.start()}; "
                "write slots as {name} and literal braces as {{ or }}")
        else:
            if "".join(buffer):
                parts.append(Text("".join(buffer)))
            buffer = []
            parts.append(_parse_slot(m.group(1), text))
    buffer.append(text[pos:])
    if "".join(buffer):
        parts.append(Text("".join(buffer)))
    return tuple(parts)


class Template:
    """A parsed prompt template. Pure data: it never touches a model.

    >>> t = Template("{text_a} It was {mask}.")
    >>> t.fields
    ('text_a',)
    """

    def __init__(self, text: str):
        if not isinstance(text, str):
            raise TemplateError(f"template must be a string, got {type(text).__name__}: {text!r}")
        if _OPENPROMPT_SLOT.search(text):
            text = from_openprompt(text)
        self.text = text
        self.parts = _parse(text)
        masks = sum(isinstance(p, Mask) for p in self.parts)
        if masks != 1:
            raise TemplateError(
                f"template {text!r} has {masks} {{mask}} slots; exactly one is needed to say where "
                "the label word is predicted, e.g. \"{text_a} It was {mask}.\"")
        self.fields = tuple(dict.fromkeys(p.name for p in self.parts if isinstance(p, Field)))
        if not self.fields:
            raise TemplateError(
                f"template {text!r} uses no example field; add one such as {{text_a}}")
        self.n_trigger = sum(p.count for p in self.parts if isinstance(p, Trigger))

    def __repr__(self) -> str:
        return f"Template({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __eq__(self, other) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    @property
    def slot_kinds(self) -> tuple[str, ...]:
        """The kinds of learned slot the template has (``soft``, ``trigger``), in the order named."""
        return tuple(kind for kind, part in (("soft", Soft), ("trigger", Trigger))
                     if any(isinstance(p, part) for p in self.parts))

    def check_slots(self, fills: Sequence[str], method: str) -> None:
        """Refuse learned slots that ``method`` (which fills the kinds ``fills``) would leave as
        placeholder tokens."""
        unfilled = [kind for kind in self.slot_kinds if kind not in fills]
        if unfilled:
            fillers = {"soft": "soft or ptuning", "trigger": "autoprompt"}[unfilled[0]]
            raise TemplateError(
                f"template {self.text!r} has {{{unfilled[0]}}} slots, which method {method!r} does not learn: "
                f"it would score placeholder tokens there; give {method!r} a template without them (its own "
                f"template:), or use {fillers}")

    @property
    def has_soft(self) -> bool:
        return any(isinstance(p, Soft) for p in self.parts)

    @property
    def text_after_mask(self) -> str:
        after = self.parts[[isinstance(p, Mask) for p in self.parts].index(True) + 1:]
        return "".join(p.text if isinstance(p, Text) else "{...}" for p in after)

    def check_fields(self, available: Iterable[str]) -> None:
        """Raise a TemplateError naming any field the task's examples do not have."""
        available = list(available)
        missing = [f for f in self.fields if f not in available]
        if missing:
            raise TemplateError(
                f"template {self.text!r} uses field {{{missing[0]}}}, which the examples do not have; "
                f"available fields: {', '.join(available)}")

    @property
    def learned_after_input(self) -> bool:
        """Whether an input field comes before every learned slot (``{soft}``, ``{trigger}``): then, on a
        causal LM, the text up to the first learned slot does not depend on what is learned, and its
        keys and values can be computed once per example (see :class:`prompting.lm.model.SpanCache`)."""
        for part in self.parts:
            if isinstance(part, Field):
                return any(isinstance(p, (Soft, Trigger)) for p in self.parts)
            if isinstance(part, (Soft, Trigger)):
                return False
        return False

    def split_leading_text(self) -> tuple[str, "Template"] | None:
        """The constant words before the first slot, and the template without them; None when the
        template starts with a slot. The spaces after the words stay in the rest (they belong to the
        next part, see the module docstring), so words and rest tokenise as in the whole template.

        >>> Template("Review: {text_a} It was {mask}.").split_leading_text()
        ('Review:', Template(' {text_a} It was {mask}.'))
        """
        first = self.parts[0]
        if not isinstance(first, Text) or not first.text.strip():
            return None
        words = first.text.rstrip(" ")
        rest = first.text[len(words):] + "".join(unparse(p) for p in self.parts[1:])
        return words, Template(rest)

    def with_triggers(self, tokens: Sequence[str]) -> "Template":
        """Return a manual template with every ``{trigger:N}`` slot replaced by the given words."""
        if len(tokens) != self.n_trigger:
            raise TemplateError(
                f"template {self.text!r} has {self.n_trigger} trigger tokens, got {len(tokens)} words")
        out, i = [], 0
        for part in self.parts:
            if isinstance(part, Trigger):
                words = " ".join(t.strip() for t in tokens[i:i + part.count])
                out.append(unparse(Text(words)))  # a trigger word may itself contain a brace
                i += part.count
            else:
                out.append(unparse(part))
        return Template("".join(out))

    def encoder(self, tokenizer, causal: bool, max_length: int = 512, **options) -> "TemplateEncoder":
        return TemplateEncoder(self, tokenizer, causal=causal, max_length=max_length, **options)


_OPENPROMPT_SLOT = re.compile(r'\{\s*["\']')


def from_openprompt(text: str) -> str:
    """Convert a template in OpenPrompt's syntax to ours.

    >>> from_openprompt('{"placeholder":"text_a"} It was {"mask"}.')
    '{text_a} It was {mask}.'

    ``{"placeholder": "text_a"}`` and ``{"meta": "premise"}`` become fields, ``{"mask"}`` the mask,
    ``{"soft"}`` / ``{"soft": "It was"}`` / ``{"soft": None, "duplicate": 3}`` soft slots; OpenPrompt's
    post-processing and shortenable flags have no equivalent and are dropped (our fields are the
    only parts ever shortened).
    """
    import ast
    import json

    def convert(match: re.Match) -> str:
        body = match.group(0)
        try:
            value = json.loads(body)
        except ValueError:
            try:  # OpenPrompt itself reads slots as Python literals ({"mask"}, None, True)
                value = ast.literal_eval(body)
            except (ValueError, SyntaxError):
                raise TemplateError(f"OpenPrompt slot {body} is not a valid JSON or Python literal") from None
        if isinstance(value, set):
            value = {next(iter(value)): None} if len(value) == 1 else {}
        if not isinstance(value, dict):
            raise TemplateError(f"OpenPrompt slot {body} is not understood")
        if "placeholder" in value or "meta" in value:
            name = value.get("placeholder") or value.get("meta")
            return "{" + str(name) + "}"
        if "mask" in value:
            return "{mask}"
        if "soft" in value:
            if value["soft"]:
                return '{soft:"%s"}' % value["soft"]
            return "{soft:%d}" % int(value.get("duplicate", 1))
        if "text" in value:
            return str(value["text"]).replace("{", "{{").replace("}", "}}")
        raise TemplateError(f"OpenPrompt slot {body} is not understood; supported: placeholder, meta, "
                            "mask, soft (with duplicate), text")

    return re.sub(r'\{\s*["\'][^{}]*\}', convert, text)


def unparse(part: Part) -> str:
    if isinstance(part, Text):
        return part.text.replace("{", "{{").replace("}", "}}")
    if isinstance(part, Field):
        return "{" + part.name + "}"
    if isinstance(part, Mask):
        return "{mask}"
    if isinstance(part, Soft):
        return '{soft:"%s"}' % part.init_text if part.init_text else "{soft:%d}" % part.count
    return "{trigger:%d}" % part.count


def special_tokens_around(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after a single text ([CLS]…[SEP], <s>…</s>, bos)."""
    plain = tokenizer("hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain):])
    return [], []


@dataclass
class Encoding:
    """One example rendered to token ids, with the position of every slot."""

    input_ids: list[int]
    mask_positions: list[int]  # masked LM: one per label-word token; causal LM: empty (predict after the end)
    soft_positions: list[int] = field(default_factory=list)
    trigger_positions: list[int] = field(default_factory=list)

    @property
    def learned_start(self) -> int:
        """The position of the first learned token (soft or trigger), or the length when there is none."""
        return min(self.soft_positions + self.trigger_positions, default=len(self.input_ids))

    def after(self, start: int) -> "Encoding":
        """The encoding from position ``start`` on, every slot position counted from there."""
        def shift(positions: list[int]) -> list[int]:
            return [p - start for p in positions]

        return Encoding(self.input_ids[start:], shift(self.mask_positions), shift(self.soft_positions),
                        shift(self.trigger_positions))


_TOKENIZER_MASK = object()  # TemplateEncoder's default mask: the tokenizer's own mask token


class TemplateEncoder:
    """Turns examples into :class:`Encoding` s for one tokenizer.

    Constant text is tokenised once; example fields are tokenised in one batched call per field.
    For a causal LM everything after ``{mask}`` is dropped (it would come after the prediction).
    ``around``: the ids put before and after the prompt in place of the tokenizer's special tokens (a
    chat template's user turn, to where the assistant's reply starts: :mod:`prompting.lm.chat`); the label
    word then starts the reply, with no space before it.
    """

    def __init__(self, template: Template, tokenizer, causal: bool, max_length: int = 512,
                 reserve: int = 0, mask_id: int | None | object = _TOKENIZER_MASK,
                 around: tuple[Sequence[int], Sequence[int]] | None = None):
        self.template = template
        self.tokenizer = tokenizer
        self.causal = causal
        self.max_length = max_length
        self.reserve = reserve  # room kept for label-word tokens appended after a causal context
        if causal and any(c.isalnum() for c in template.text_after_mask):
            warnings.warn(
                f"template {template.text!r}: a causal LM predicts {{mask}} from the text before it, "
                f"so the text after it ({template.text_after_mask!r}) is not seen", stacklevel=3)
        self.prefix_ids, self.suffix_ids = special_tokens_around(tokenizer)
        if causal:
            self.suffix_ids = []
        if around is not None:
            self.prefix_ids, self.suffix_ids = list(around[0]), list(around[1])
        self.placeholder_id = _placeholder_id(tokenizer)
        # ``mask_id`` given (an encoder-decoder LM's mask or sentinel, or None: the slot is left empty)
        self.mask_id = tokenizer.mask_token_id if mask_id is _TOKENIZER_MASK else mask_id
        if not causal and self.mask_id is None and mask_id is _TOKENIZER_MASK:
            raise TemplateError(f"tokenizer {type(tokenizer).__name__} has no mask token; "
                                "a masked LM needs one")
        self.mask_leading_space = False
        # for each {soft} slot in order: token ids of its init text, or None for {soft:N}
        self.soft_init_ids: list[list[int] | None] = []
        self.pieces = self._layout()
        self.around = around
        if around is not None:  # the answer starts a turn of its own
            self.mask_leading_space = False

    def _layout(self) -> list[tuple[str, object]]:
        """Resolve whitespace and tokenise constant parts: ('ids', [...]), ('field', (name, lead)),
        ('soft', n), ('trigger', n), ('mask', None)."""
        parts = self.template.parts
        if self.causal:
            parts = parts[:[isinstance(p, Mask) for p in parts].index(True) + 1]
        pieces: list[tuple[str, object]] = []
        lead = False  # a space carried over from the end of the previous text part
        for i, part in enumerate(parts):
            if isinstance(part, Text):
                text = (" " if lead else "") + part.text
                nxt = parts[i + 1] if i + 1 < len(parts) else None
                stripped = text.rstrip(" ")
                lead = nxt is not None and stripped != text
                text = stripped if nxt is not None else text
                if text:
                    pieces.append(("ids", self._tokenize(text)))
            elif isinstance(part, Field):
                pieces.append(("field", (part.name, lead)))
                lead = False
            elif isinstance(part, Mask):
                self.mask_leading_space = lead
                pieces.append(("mask", None))
                lead = False
            elif isinstance(part, Soft):
                init = self._tokenize((" " if lead else "") + part.init_text) if part.init_text else None
                self.soft_init_ids.append(init)
                pieces.append(("soft", len(init) if init else part.count))
                lead = False
            else:
                pieces.append(("trigger", part.count))
                lead = False
        return pieces

    def _tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, examples: Sequence[Mapping[str, str]], n_mask: int = 1) -> list[Encoding]:
        """Encode examples (mappings from field name to text); ``n_mask`` masks for a masked LM."""
        field_ids: dict[tuple[str, bool], list[list[int]]] = {}
        for kind, value in self.pieces:
            if kind == "field" and value not in field_ids:
                name, lead = value
                texts = [_field_text(ex, name, self.template) for ex in examples]
                texts = [(" " + t if lead and t else t) for t in texts]  # an empty field adds no space
                field_ids[value] = (self.tokenizer(texts, add_special_tokens=False)["input_ids"]
                                    if texts else [])
        fixed = len(self.prefix_ids) + len(self.suffix_ids) + self.reserve
        for kind, value in self.pieces:
            if kind == "ids":
                fixed += len(value)
            elif kind in ("soft", "trigger"):
                fixed += value
            elif kind == "mask" and not self.causal and self.mask_id is not None:
                fixed += n_mask
        budget = self.max_length - fixed
        if budget < len(field_ids):
            raise TemplateError(
                f"template {self.template.text!r} needs {fixed} tokens without its fields, more than "
                f"max_length={self.max_length}; shorten the template or raise max_length")
        encodings = []
        for i in range(len(examples)):
            lengths = _truncate({k: len(v[i]) for k, v in field_ids.items()}, budget)
            ids = list(self.prefix_ids)
            enc = Encoding(ids, [])
            for kind, value in self.pieces:
                if kind == "ids":
                    ids.extend(value)
                elif kind == "field":
                    ids.extend(field_ids[value][i][:lengths[value]])
                elif kind == "soft":
                    enc.soft_positions.extend(range(len(ids), len(ids) + value))
                    ids.extend([self.placeholder_id] * value)
                elif kind == "trigger":
                    enc.trigger_positions.extend(range(len(ids), len(ids) + value))
                    ids.extend([self.placeholder_id] * value)
                elif not self.causal and self.mask_id is not None:
                    enc.mask_positions.extend(range(len(ids), len(ids) + n_mask))
                    ids.extend([self.mask_id] * n_mask)
            ids.extend(self.suffix_ids)
            if not ids:  # a causal LM predicts from nothing: read it after the start token, as lm-eval does
                ids.append(self.empty_context_id())
            encodings.append(enc)
        return encodings

    def empty_context_id(self) -> int:
        """The token a causal prompt with no token at all (empty fields, no words before ``{mask}``) is
        read after: the tokenizer's beginning-of-sequence token, else its end-of-text token."""
        for name in ("bos_token_id", "eos_token_id"):
            value = getattr(self.tokenizer, name, None)
            if value is not None:
                return value
        raise TemplateError(f"template {self.template.text!r} with empty fields leaves a causal LM no token to "
                            "predict {mask} from, and the tokenizer has no start or end token to read it after; "
                            "put words before {mask}")


def _field_text(example: Mapping[str, str], name: str, template: Template) -> str:
    try:
        value = example[name]
    except KeyError:
        raise TemplateError(
            f"template {template.text!r} uses field {{{name}}}, which the example does not have; "
            f"available fields: {', '.join(example)}") from None
    return str(value).strip()


def _truncate(lengths: dict, budget: int) -> dict:
    """Shorten the longest field first until the fields fit ``budget`` tokens."""
    lengths = dict(lengths)
    excess = sum(lengths.values()) - budget
    while excess > 0:
        longest = max(lengths, key=lengths.get)
        others = sorted((v for k, v in lengths.items() if k != longest), reverse=True)
        cut = min(excess, lengths[longest] - (others[0] if others else 0)) or 1
        lengths[longest] -= cut
        excess -= cut
    return lengths


def _placeholder_id(tokenizer) -> int:
    for name in ("unk_token_id", "pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return value
    return 0


@dataclass
class FrozenSpans:
    """The leading tokens of each row that a batch leaves out: their keys and values come from a cache
    (:class:`prompting.lm.model.SpanCache`), and the batch holds only what follows them."""

    ids: list[tuple[int, ...]]  # per row, the span's token ids (the cache key)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.ids]

    def repeat(self, times: int) -> "FrozenSpans":
        return FrozenSpans(self.ids * times)


@dataclass
class PromptBatch:
    """Encodings padded into tensors. Causal LMs are padded on the left, so every context ends at
    the last position and label-word tokens can be appended to all rows at once.

    With ``frozen`` set, each row holds only the tokens after its frozen span; its positions
    continue from the span's length."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    mask_positions: torch.Tensor  # [B, n_mask] (masked LM) or [B, 0]
    soft_positions: torch.Tensor  # [B, n_soft]
    trigger_positions: torch.Tensor  # [B, n_trigger]
    frozen: FrozenSpans | None = None

    def _tensors(self) -> list[torch.Tensor]:
        return [self.input_ids, self.attention_mask, self.position_ids, self.mask_positions,
                self.soft_positions, self.trigger_positions]

    def to(self, device) -> "PromptBatch":
        return PromptBatch(*(t.to(device) for t in self._tensors()), frozen=self.frozen)

    def repeat(self, times: int) -> "PromptBatch":
        """The batch ``times`` over, row blocks one after the other."""
        return PromptBatch(*(t.repeat(times, 1) for t in self._tensors()),
                           frozen=None if self.frozen is None else self.frozen.repeat(times))

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def collate(encodings: Sequence[Encoding], pad_id: int, left: bool,
            frozen: Sequence[int] | None = None) -> PromptBatch:
    """Pad encodings into a batch. ``frozen`` (causal LM, left padding): per row, how many leading
    tokens to leave out (see :class:`FrozenSpans`)."""
    import torch

    spans = None
    if frozen is not None:
        spans = FrozenSpans([tuple(e.input_ids[:n]) for e, n in zip(encodings, frozen)])
        encodings = [e.after(n) for e, n in zip(encodings, frozen)]
    width = max(len(e.input_ids) for e in encodings)
    ids = torch.full((len(encodings), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(encodings), width), dtype=torch.long)
    offsets = []
    for row, enc in enumerate(encodings):
        n = len(enc.input_ids)
        start = width - n if left else 0
        ids[row, start:start + n] = torch.tensor(enc.input_ids, dtype=torch.long)
        attention[row, start:start + n] = 1
        offsets.append(start)

    def positions(name: str) -> torch.Tensor:
        rows = [[p + off for p in getattr(e, name)] for e, off in zip(encodings, offsets)]
        return torch.tensor(rows, dtype=torch.long).reshape(len(encodings), -1)

    position_ids = (attention.cumsum(1) - 1).clamp(min=0)
    if spans is not None:
        position_ids = position_ids + torch.tensor(spans.lengths, dtype=torch.long).unsqueeze(1)
    return PromptBatch(ids, attention, position_ids, positions("mask_positions"),
                       positions("soft_positions"), positions("trigger_positions"), spans)
