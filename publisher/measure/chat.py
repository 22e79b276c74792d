"""Render conversations with the model's own chat template, to token ids.

Templates that reject a system turn (Gemma-2 raises "System role not supported") get the system text
merged into the first user turn: system text, blank line, user text.

    >>> ids, merged = chat_token_ids(tokenizer, [{"role": "system", "content": "Be brief."},
    ...                                          {"role": "user", "content": "Hi"}], add_generation_prompt=True)
    >>> merged        # True only when the template refused the system turn
    False
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jinja2 import TemplateError

from .errors import ChatTemplateError

Message = dict[str, Any]


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def merge_system_turn(messages: Sequence[Message]) -> list[Message]:
    """Fold leading system turns into the first user turn ("system\\n\\nuser"); other turns unchanged."""
    systems = [m["content"] for m in messages if m.get("role") == "system"]
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not systems:
        return rest
    prefix = "\n\n".join(systems)
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{prefix}\n\n{message['content']}"
            return rest
    return [{"role": "user", "content": prefix}, *rest]


def _ids(rendered: Any) -> list[int]:
    ids = rendered["input_ids"] if hasattr(rendered, "keys") else rendered
    if ids and isinstance(ids[0], list):  # a batch of one
        ids = ids[0]
    return [int(i) for i in ids]


def chat_token_ids(tokenizer: Any, messages: Sequence[Message], *,
                   add_generation_prompt: bool) -> tuple[list[int], bool]:
    """Token ids of `messages` through the tokenizer's template, and whether the system turn was merged."""
    if not has_chat_template(tokenizer):
        raise ChatTemplateError(
            "the tokenizer has no chat template; set one (tokenizer.chat_template = ...) or use plain-text data"
        )
    try:
        rendered = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt,
                                                 tokenize=True)
        return _ids(rendered), False
    except TemplateError as first:
        if not any(m.get("role") == "system" for m in messages):
            raise ChatTemplateError(f"the chat template cannot render this conversation: {first}") from None
        try:
            rendered = tokenizer.apply_chat_template(merge_system_turn(messages),
                                                     add_generation_prompt=add_generation_prompt, tokenize=True)
        except TemplateError as second:
            raise ChatTemplateError(f"the chat template cannot render this conversation: {second}") from None
        return _ids(rendered), True


def eos_token_ids(*declared: Any) -> set[int]:
    """The end-of-sequence ids a model's config, generation config and tokenizer declare (each an int, a list of
    them, or None), together.

        >>> eos_token_ids(model.generation_config.eos_token_id, tokenizer.eos_token_id)
        {2, 128009}
    """
    ids: set[int] = set()
    for value in declared:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids
