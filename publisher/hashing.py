"""sha256 of a file, streamed in 1 MiB blocks: the one hash every stage records and compares.

    >>> sha256_file(Path("runs/x/model.safetensors"))
    '05b7f3ef…'
    >>> sha256_file_unchanged(Path("base/model.safetensors"))   # read once per process while the file is unchanged
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

_KNOWN: dict[tuple, str] = {}  # (real path, device, inode, size, mtime, ctime) → sha256: `sha256_file_unchanged`
_SETTLED_NS = 2_000_000_000  # files written in the last 2 s are always read


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_file_unchanged(path: Path | str) -> str:
    """`sha256_file`, read once per process while the file's device, inode, size, mtime and ctime stay the same.

    For inputs hashed again and again in one process (a local base model, once per artifact of a release
    grid); any write changes mtime and ctime, and ctime cannot be set back. Checks of files that may have
    been damaged (resume, verification) call `sha256_file`, which always reads.
    """
    stat = os.stat(path)
    if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < _SETTLED_NS:
        return sha256_file(path)  # coarse timestamps: a second write this soon could keep them all
    key = (os.path.realpath(path), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    if key not in _KNOWN:
        _KNOWN[key] = sha256_file(path)
    return _KNOWN[key]
