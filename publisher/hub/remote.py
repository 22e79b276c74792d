"""What a Hub repo holds at a revision, and whether publish-pruned may write over it.

    >>> remote = inspect_remote(api, "alice/m-magnitude-s50", head)
    >>> check_ownership(remote, results, force=False)   # PublishError: a foreign card or another base model

A card is publish-pruned's when its front matter carries the `research-only` tag and its text holds
`CARD_MARKER` (or, for cards rendered before the marker existed, the "Made with: publish-pruned" line).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoFile

from ..errors import PublishError
from ..front_matter import card_metadata
from ..hashing import sha256_file
from ..results import Results
from .retry import DEFAULT_POLICY, RetryPolicy, with_retries

CARD_FILE = "README.md"
RESULTS_FILE = "results.json"
# Must equal publisher.card.render.RESEARCH_ONLY_TAG (not imported: that module pulls in torch).
RESEARCH_ONLY_TAG = "research-only"
# The template writes this HTML comment (invisible on the Hub) into every card it renders.
CARD_MARKER = "<!-- generated-by: publish-pruned -->"
_LEGACY_SIGNATURE = "**Made with:** publish-pruned"


def front_matter(text: str) -> dict[str, Any]:
    """The YAML front matter of a card as a dict ({} when absent or invalid), read as the Hub reads it."""
    return card_metadata(text)


def is_publish_pruned_card(text: str) -> bool:
    """Whether publish-pruned wrote this card: the research-only tag and the generator marker."""
    tags = front_matter(text).get("tags") or []
    return RESEARCH_ONLY_TAG in tags and (CARD_MARKER in text or _LEGACY_SIGNATURE in text)


@dataclass
class RemoteState:
    """A repo at one commit: its files (path -> tree entry), its card and results.json when present."""

    repo_id: str
    revision: str
    files: dict[str, RepoFile] = field(default_factory=dict)
    card: str | None = None
    results: dict[str, Any] | None = None

    @property
    def base_model(self) -> str | None:
        value = front_matter(self.card or "").get("base_model")
        return value if isinstance(value, str) else None


@contextlib.contextmanager
def _downloaded(api: HfApi, repo_id: str, path: str, revision: str, policy: RetryPolicy) -> Iterator[Path]:
    """One remote file in a throw-away folder (the user's cache is left alone), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="publish-pruned-") as tmp:
        yield Path(with_retries(lambda: api.hf_hub_download(repo_id, path, revision=revision, cache_dir=tmp),
                                what=f"download of {path}", policy=policy))


def download_text(api: HfApi, repo_id: str, path: str, revision: str, policy: RetryPolicy = DEFAULT_POLICY) -> str:
    """One small remote file as text."""
    with _downloaded(api, repo_id, path, revision, policy) as local:
        return local.read_text(encoding="utf-8")


def remote_sha256(api: HfApi, repo_id: str, path: str, revision: str, policy: RetryPolicy = DEFAULT_POLICY) -> str:
    """The sha256 of a remote file's content; for small non-LFS files, whose tree entry gives only a git sha1."""
    with _downloaded(api, repo_id, path, revision, policy) as local:
        return sha256_file(local)


def inspect_remote(api: HfApi, repo_id: str, revision: str, policy: RetryPolicy = DEFAULT_POLICY) -> RemoteState:
    """List the files at `revision` (a commit id, ideally) and read the card and results.json."""
    tree = with_retries(lambda: list(api.list_repo_tree(repo_id, revision=revision, recursive=True)),
                        what="listing the remote files", policy=policy)
    state = RemoteState(repo_id, revision, {e.path: e for e in tree if isinstance(e, RepoFile)})
    if CARD_FILE in state.files:
        state.card = download_text(api, repo_id, CARD_FILE, revision, policy)
    if RESULTS_FILE in state.files:
        try:
            data = json.loads(download_text(api, repo_id, RESULTS_FILE, revision, policy))
            state.results = data if isinstance(data, dict) else None
        except ValueError:
            state.results = None
    return state


def _source_pin(source: dict[str, Any]) -> str | None:
    """The exact base checkpoint a run pruned: a Hub commit or a content hash."""
    return source.get("revision") or source.get("content_sha256")


def ownership_problems(remote: RemoteState, results: Results | None) -> list[str]:
    """Why pushing this run into `remote` would overwrite something publish-pruned did not make, or another
    base model's derivative. Empty when it is safe."""
    interesting = {p for p in remote.files if p != ".gitattributes"}
    if not interesting:
        return []
    if remote.card is None:
        return [f"it holds {len(interesting)} files but no {CARD_FILE} written by publish-pruned"]
    if not is_publish_pruned_card(remote.card):
        return [f"its {CARD_FILE} was not written by publish-pruned (no '{RESEARCH_ONLY_TAG}' tag and "
                "generator marker)"]
    if results is None:
        return []
    problems = []
    local_base = results.source.base_model_id
    if remote.base_model and local_base and remote.base_model != local_base:
        problems.append(f"its card is for base model {remote.base_model}, this run prunes {local_base}")
    remote_source = (remote.results or {}).get("source") or {}
    if remote_source:
        remote_base = remote_source.get("base_model_id")
        if remote_base and local_base and remote_base != local_base and not problems:
            problems.append(f"its results.json is for base model {remote_base}, this run prunes {local_base}")
        local_pin, remote_pin = results.source.revision or results.source.content_sha256, _source_pin(remote_source)
        if local_pin and remote_pin and local_pin != remote_pin:
            problems.append(f"it was pruned from another checkpoint of the base model ({remote_pin[:12]}, "
                            f"this run: {local_pin[:12]})")
    return problems


def check_ownership(remote: RemoteState, results: Results | None, *, force: bool) -> None:
    """Raise PublishError when `ownership_problems` finds any, unless `force`."""
    problems = ownership_problems(remote, results)
    if problems and not force:
        raise PublishError(f"refusing to push into {remote.repo_id}: {'; '.join(problems)}. Nothing was uploaded; "
                           "pass --force to overwrite it anyway")
