"""The Hub datasets the measurements and calibration read: the optional `datasets` package, pinned commits.

    >>> datasets = datasets_module(BbqDataError, "loading BBQ", "pass a folder of BBQ JSONL files with --bbq-path")
    >>> revision = dataset_commit("Elfsong/BBQ", None)      # the commit sha `main` points at now
    >>> dataset_data_files("allenai/c4", revision)          # path → git blob id, documentation left out
"""

from __future__ import annotations

from types import ModuleType


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
