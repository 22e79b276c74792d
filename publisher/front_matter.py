"""A card's YAML front matter, split as the Hub splits it: huggingface_hub's `RepoCard` and its regex (the Hub
server's), so LF, CRLF and CR line endings all work and a card reads here as the Hub reads it.

    >>> meta, body = split_card(text)    # ({'license': 'apache-2.0', ...}, '\\n# Title...'); CardError when
    ...                                  # absent, not YAML, or not a mapping
    >>> card_metadata(text)              # the same dict, or {} when absent or invalid (a foreign card)

`meta` is the raw YAML mapping (keys with a null value left out, as `CardData.to_dict` does), not
`ModelCardData`, which would reinterpret `model-index`; `body` keeps the card's own line endings.
"""

from __future__ import annotations

from typing import Any

import yaml
from huggingface_hub.repocard import REGEX_YAML_BLOCK, RepoCard

from .errors import CardError, describe_read_error


def split_card(text: str) -> tuple[dict[str, Any], str]:
    """(front matter, body) of a card; CardError naming what is wrong when there is no usable front matter."""
    if not REGEX_YAML_BLOCK.search(text):  # checked first: RepoCard only logs a warning for a missing block
        raise CardError("card has no YAML front matter")
    try:
        card = RepoCard(text)
    except yaml.YAMLError as exc:
        raise CardError(f"card front matter is not valid YAML: {describe_read_error(exc)}") from None
    except (ValueError, TypeError):  # a list or scalar; or a mapping with non-text keys
        raise CardError("card front matter must be a YAML mapping") from None
    return card.data.to_dict(), card.text


def card_metadata(text: str) -> dict[str, Any]:
    """The front matter of a card as a dict ({} when absent or invalid)."""
    try:
        return split_card(text)[0]
    except CardError:
        return {}
