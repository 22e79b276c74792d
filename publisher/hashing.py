"""sha256 of a file, streamed in 1 MiB blocks: the one hash every stage records and compares.

    >>> sha256_file(Path("runs/x/model.safetensors"))
    '05b7f3ef…'
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
