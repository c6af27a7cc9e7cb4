"""Prompts as chat turns: the token ids a tokenizer's chat template puts around a user message.

With ``chat: true`` a method entry's prompt (its template filled in, up to where ``{mask}`` is) is the user
message of a one-turn chat, rendered by the tokenizer's own chat template with the generation prompt
(``apply_chat_template(..., add_generation_prompt=True)``): the label word, or the answer the model
writes, is then the start of the assistant's reply. For SmolLM2-Instruct:

    <|im_start|>system\\nYou are a helpful AI assistant named SmolLM, ...<|im_end|>\\n
    <|im_start|>user\\nReview: a fine film\\nSentiment:<|im_end|>\\n<|im_start|>assistant\\n  positive

The template is rendered once around a marker and cut there (:func:`chat_turn`), so that the prompt itself
is still tokenised part by part, every slot at its place (:class:`prompting.core.template.TemplateEncoder`
takes the two pieces as ``around``). Whatever the chat template adds (a default system message, a start
token) comes with them.
"""

from __future__ import annotations

import functools

__all__ = ["ChatTemplateError", "chat_turn", "MARKER"]

#: what stands for the user message while the chat template is rendered
MARKER = "\u2063prompting-user-message\u2063"


class ChatTemplateError(ValueError):
    """A tokenizer without a chat template, or one that does not render a single user message."""


def chat_turn(lm) -> tuple[list[int], list[int]]:
    """The ids a :class:`prompting.lm.model.LanguageModel`'s chat template puts before a user message's text and
    after it, to where the assistant's reply starts. A causal LM whose tokenizer has a chat template only."""
    if not lm.causal:
        raise ChatTemplateError(
            f"model {lm.name!r} is {'a masked' if lm.masked else 'an encoder-decoder'} LM; chat: true makes the "
            "prompt a user turn that a causal LM continues with the assistant's reply: leave chat out for this "
            "model, or use a causal LM with a chat template (e.g. smollm2-135m)")
    return _rendered(lm.tokenizer, lm.name)


@functools.lru_cache(maxsize=8)
def _rendered(tokenizer, model: str) -> tuple[list[int], list[int]]:
    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError(
            f"model {model!r}: its tokenizer has no chat template, so chat: true cannot render the prompt as a "
            "user message; leave chat out for this model, or use an instruction-tuned model whose tokenizer has "
            "one (e.g. smollm2-135m)")
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": MARKER}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception as err:  # the template is the model's own code (Jinja): any error it raises
        raise ChatTemplateError(f"model {model!r}: its chat template does not render one user message "
                                f"({type(err).__name__}: {err}); leave chat out for this model") from None
    if not isinstance(text, str) or text.count(MARKER) != 1:
        raise ChatTemplateError(f"model {model!r}: its chat template does not keep a user message as written "
                                "(the message is changed or repeated); leave chat out for this model")
    before, after = text.split(MARKER)
    return _ids(tokenizer, before), _ids(tokenizer, after)


def _ids(tokenizer, text: str) -> list[int]:
    # the template writes its special tokens as text: tokenised as such, with nothing added around them
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []
