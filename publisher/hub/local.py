"""`--hub local`: start the bundled Hub emulator in this process, with a fresh write token.

    >>> with local_hub(Path("local-hub")) as (endpoint, token):
    ...     HfApi(endpoint=endpoint, token=token).whoami()["name"]
    'local-user'
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from pathlib import Path

LOCAL_USER = "local-user"


@contextlib.contextmanager
def local_hub(root: Path, port: int = 0) -> Iterator[tuple[str, str]]:
    import huggingface_hub.constants

    from ..emulator import HubEmulator

    # The emulator speaks LFS, not Xet; the client reads this constant on every upload.
    huggingface_hub.constants.HF_HUB_DISABLE_XET = True
    token = f"hf_local_{secrets.token_hex(16)}"
    root.mkdir(parents=True, exist_ok=True)
    with HubEmulator(root=root, tokens={token: (LOCAL_USER, "write")}, port=port) as hub:
        yield hub.url, token
