"""The Hub datasets the measurements and calibration read: the optional `datasets` package, pinned commits.

    >>> datasets = datasets_module(BbqDataError, "loading BBQ", "pass a folder of BBQ JSONL files with --bbq-path")
    >>> revision = dataset_commit("Elfsong/BBQ", None)      # the commit sha `main` points at now
    >>> dataset_data_files("allenai/c4", revision)          # path → git blob id, documentation left out
    >>> moved_dataset("allenai/c4", None, recorded)         # main's commit if its data differ from `recorded`
"""

from __future__ import annotations

import logging
import os
import re
from types import ModuleType

CHECK_TIMEOUT_S = 20  # for `moved_dataset`: a stalled network must not hang a resumed run
_COMMIT = re.compile(r"[0-9a-f]{40}")
_OFFLINE_FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_ANSWERS: dict[tuple[str, str | None, str], str | None] = {}  # `moved_dataset`'s answers from the Hub

log = logging.getLogger(__name__)


def datasets_module(error: type[Exception], what: str, instead: str) -> ModuleType:
    """The `datasets` package, or `error` saying what needs it and what to do without it."""
    try:
        import datasets
    except ImportError:
        raise error(f"{what} from the Hub needs the `datasets` package (pip install 'publish-pruned[data]'); "
                    f"or {instead}") from None
    return datasets


def dataset_commit(name: str, revision: str | None) -> str:
    """The commit sha a dataset's `revision` (None: main) points at; raises the client's errors."""
    from huggingface_hub import HfApi

    return HfApi().dataset_info(name, revision=revision).sha


def dataset_data_files(name: str, revision: str) -> dict[str, str]:
    """Path → git blob id of every file of a dataset at `revision` but its documentation (Markdown,
    `.gitattributes`): two revisions with equal maps hold the same data. Raises the client's errors."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    tree = HfApi().list_repo_tree(name, repo_type="dataset", revision=revision, recursive=True)
    documentation = (".md", ".gitattributes")
    return {e.path: e.blob_id for e in tree if isinstance(e, RepoFile) and not e.path.endswith(documentation)}


def moved_dataset(name: str, revision: str | None, used: str) -> str | None:
    """The commit a Hub dataset's `revision` (None: main) points at now, if it holds other data than commit
    `used` (the one a stage read); else None.

    Only data count: a commit that changes nothing but Markdown or `.gitattributes` (a README edit) is not a
    move. None for a full commit id (it cannot move), offline (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`), and
    when the Hub cannot tell within `CHECK_TIMEOUT_S` (gated, a deleted branch): callers keep what they have.
    The Hub's answers are kept for the process (a release grid asks for every artifact); failures are not.
    """
    if revision is not None and _COMMIT.fullmatch(revision):
        return None
    if any(os.environ.get(flag, "").upper() in ("1", "ON", "YES", "TRUE") for flag in _OFFLINE_FLAGS):
        return None  # the user said offline: no Hub call, not even one that fails fast
    key = (name, revision, used)
    if key not in _ANSWERS:
        from .hub.retry import http_timeouts  # late: the Hub client is not needed for local data

        try:
            with http_timeouts(CHECK_TIMEOUT_S):
                now = dataset_commit(name, revision)
                same = now == used or dataset_data_files(name, now) == dataset_data_files(name, used)
        except Exception as error:
            log.info("could not check whether dataset %s moved since %s (%s); keeping what was made from it",
                     name, used[:12], type(error).__name__)
            return None
        _ANSWERS[key] = None if same else now
    return _ANSWERS[key]
