"""Local paths as they are published: relative to the working folder when under it, else a name and a sha256.

A card, `results.json` and a Hub commit are public; an absolute path in them tells the world a user name and
a folder layout (`/home/alice/models/x`), and says nothing a reader can check. So a local path is recorded
relative to the current working folder when it lies under it, and otherwise as its file or folder name, with
the content's sha256 where the record has no field for it (`name@sha256:<hex>` in the recorded command;
`results.json` pairs the name with its own hash field: `source.content_sha256`,
`pruning.calibration.file_sha256`, the measurements' `source_sha256` and `files`).

    >>> recorded_path("/work/proj/data/text.jsonl")                  # working folder /work/proj
    'data/text.jsonl'
    >>> recorded_path("/home/alice/models/m", "ab12…")
    'm@sha256:ab12…'
    >>> public_command("publish-pruned --model /home/alice/m --sparsity 0.5", {"/home/alice/m": "ab12…"})
    'publish-pruned --model m@sha256:ab12… --sparsity 0.5'

The run folder's own stage records (`.publish-pruned/`, never published) keep the paths as given: resuming
compares them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .hashing import sha256_file_unchanged

# Options naming where the tool writes (or a secret it reads): recorded by name only. Hashing an output folder
# would read a whole checkpoint or cache and identify nothing; a token file's hash is nobody's business.
NAME_ONLY_OPTIONS = frozenset({"--output-dir", "--output-root", "--cache-dir", "--hub-dir", "--summary", "--diff-out",
                               "--output", "-o", "--out", "--root", "--token-file"})


def is_local_path(value: str) -> bool:
    """Whether `value` names a place on this machine that could fall outside the working folder: absolute,
    `~`-relative, or climbing with `..` (a Hub id, a URL or a plain relative path is not)."""
    if not value or "://" in value:
        return False
    return os.path.isabs(os.path.expanduser(value)) or ".." in Path(value).parts


def recorded_path(path: str | os.PathLike[str], sha256: str | None = None, *, hash_content: bool = False) -> str:
    """How `path` is published: relative to the working folder when under it (posix, `.` for the folder itself),
    else its name, followed by `@sha256:<sha256>` when given or, with `hash_content`, computed: a file's own, a
    folder's from its files' (`folder_sha256`); each file read once per process while unchanged."""
    given = Path(os.path.expanduser(os.fspath(path)))
    full = given if given.is_absolute() else Path.cwd() / given
    cwd = Path.cwd()
    for candidate in (Path(os.path.normpath(full)), full.resolve()):  # as written, then with links followed
        if candidate == cwd or cwd in candidate.parents:
            return candidate.relative_to(cwd).as_posix() or "."
    name = full.resolve().name or full.name or "."
    if sha256 is None and hash_content and full.is_file():
        sha256 = sha256_file_unchanged(full)
    elif sha256 is None and hash_content and full.is_dir():
        sha256 = folder_sha256({f.name: sha256_file_unchanged(f) for f in sorted(full.iterdir()) if f.is_file()})
    return f"{name}@sha256:{sha256}" if sha256 else name


def folder_sha256(digests: Mapping[str, str]) -> str:
    """One sha256 for a folder from its files' (name → sha256): the scheme of a local base's content hash."""
    return hashlib.sha256(json.dumps(dict(digests), sort_keys=True).encode()).hexdigest()


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def public_command(command: str, known: Mapping[str, str | None] | None = None) -> str:
    """`command` (as `shlex.quote`d words) with every local path outside the working folder replaced by its
    `recorded_path`: `known` maps paths to content hashes computed already (a local base's: never read twice),
    other inputs are hashed (each file once per process), NAME_ONLY_OPTIONS values keep their name only."""
    hashes = {_key(p): sha for p, sha in (known or {}).items()}
    words = shlex.split(command)
    out: list[str] = []
    for i, word in enumerate(words):
        option, eq, value = word.partition("=") if word.startswith("-") else ("", "", word)
        if not eq:
            option, value = (words[i - 1] if i and words[i - 1].startswith("-") else ""), word
        if i and is_local_path(value):
            name_only = option in NAME_ONLY_OPTIONS
            sha = None if name_only else hashes.get(_key(value))
            value = recorded_path(value, sha, hash_content=not name_only and sha is None)
            word = f"{option}={value}" if eq else value
        out.append(word)
    return " ".join(shlex.quote(w) for w in out)


def path_forms(path: str | os.PathLike[str]) -> set[str]:
    """The spellings of a local path a record may hold: as given, absolute, and with links followed."""
    given = os.fspath(path)
    return {given, _key(given), str(Path(_key(given)).resolve())}


def public_paths(data: Any, replacements: Mapping[str, str]) -> Any:
    """`data` (JSON-like) with every string equal to a key of `replacements`, or ending in `:<key>` (labels such
    as `jsonl:/home/alice/text.jsonl`), replaced by its value; anything else unchanged."""
    if isinstance(data, dict):
        return {k: public_paths(v, replacements) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [public_paths(v, replacements) for v in data]
    if isinstance(data, str):
        if data in replacements:
            return replacements[data]
        kind, sep, rest = data.partition(":")
        if sep and rest in replacements and kind.replace("_", "").isalnum():
            return f"{kind}:{replacements[rest]}"
    return data
