"""Where the Hub token comes from: a token file, `HF_TOKEN`, or the login cache. Never the command line.

    >>> api = HfApi(endpoint=endpoint, token=resolve_token(Path("~/.secrets/hf").expanduser()))
    >>> api = HfApi(endpoint=endpoint, token=resolve_token())   # HF_TOKEN, else `hf auth login`'s cache

The token's value never appears in an error message or a log line.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from huggingface_hub import get_token

from ..errors import HubAuthError

log = logging.getLogger(__name__)


def read_token_file(path: Path) -> str:
    """The token held by `path` (first non-empty line). HubAuthError if unreadable or empty."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HubAuthError(f"cannot read the token file {path} ({exc.strerror or type(exc).__name__})") from None
    token = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not token or any(ch.isspace() for ch in token):
        raise HubAuthError(f"the token file {path} must hold one token on its first line")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s is readable by other users; chmod 600 it", path)
    return token


def resolve_token(token_file: Path | None = None) -> str | None:
    """`token_file` when given, else `HF_TOKEN`, else the login cache (`huggingface_hub.get_token`); None if none."""
    if token_file is not None:
        return read_token_file(Path(token_file).expanduser())
    return get_token()
