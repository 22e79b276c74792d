"""`card sync`: bring the Hub's README.md of many repos in line with the local cards, card only.

    >>> items = load_card_items([Path("runs/a"), Path("runs/b")])      # [(repo_id, card text), ...]
    >>> for sync in sync_cards(api, items, dry_run=True):                # a unified diff per repo
    ...     print(sync.repo_id, sync.status); print(sync.diff)
    >>> sync_cards(api, items, dry_run=False)                           # one README-only commit per changed repo

Status per repo: `unchanged`, `would-update` (dry run), `updated`, or `error` (with `error` set: a missing
repo, a foreign card without `force`, a concurrent commit). A commit carries `parentCommit`, so a card
edited on the Hub after the diff was shown is never silently overwritten.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

from ..errors import HUB_UNAVAILABLE, PublishError, PublishPrunedError
from .remote import CARD_FILE, RESULTS_FILE, download_text, is_publish_pruned_card
from .retry import DEFAULT_POLICY, RetryPolicy, describe, hub_unavailable, is_transient, status_of, with_retries

SYNC_MESSAGE = "Update model card (publish-pruned card sync)"


@dataclass
class CardSync:
    repo_id: str
    status: str  # unchanged | would-update | updated | error
    diff: str = ""  # unified diff, Hub -> local
    commit: str | None = None
    error: str | None = None
    unavailable: bool = False  # the error was the Hub or the network being unavailable (retry later)


def sync_exit_code(syncs: list[CardSync]) -> int:
    """0 when every card synced; HUB_UNAVAILABLE when every failure was the Hub or network being unavailable
    (retry later); else 1."""
    failed = [s for s in syncs if s.status == "error"]
    return 0 if not failed else HUB_UNAVAILABLE if all(s.unavailable for s in failed) else 1


def card_diff(repo_id: str, remote: str | None, local: str) -> str:
    """A unified diff from the Hub's card to the local one ('' when equal)."""
    lines = difflib.unified_diff((remote or "").splitlines(keepends=True), local.splitlines(keepends=True),
                                 fromfile=f"hub:{repo_id}/{CARD_FILE}", tofile=f"local:{repo_id}/{CARD_FILE}")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def load_card_items(run_dirs: Iterable[Path]) -> list[tuple[str, str]]:
    """(repo_id, card text) of finished run folders; the repo id is the one recorded in results.json."""
    items = []
    for folder in run_dirs:
        try:
            settings = json.loads((folder / RESULTS_FILE).read_text())["settings"]
            card = (folder / CARD_FILE).read_text()
        except (OSError, ValueError, KeyError) as exc:
            raise PublishError(f"{folder} is not a finished run folder ({type(exc).__name__})") from None
        if not settings.get("repo_id"):
            raise PublishError(f"{folder}/{RESULTS_FILE} records no repo_id; push it once first")
        items.append((settings["repo_id"], card))
    return items


def sync_cards(api: HfApi, items: Iterable[tuple[str, str]], *, dry_run: bool = True, revision: str = "main",
               force: bool = False, policy: RetryPolicy = DEFAULT_POLICY) -> list[CardSync]:
    """Diff (and unless `dry_run`, commit) each local card against the Hub's; one result per item, in order."""
    results = []
    for repo_id, text in items:
        try:
            results.append(_sync_one(api, repo_id, text, dry_run=dry_run, revision=revision, force=force,
                                     policy=policy))
        except (PublishPrunedError, HfHubHTTPError) as exc:
            results.append(CardSync(repo_id, "error", error=str(exc).splitlines()[0][:300],
                                    unavailable=hub_unavailable(exc)))
        except Exception as exc:
            if not is_transient(exc):
                raise
            results.append(CardSync(repo_id, "error", error=f"cannot reach the Hub ({describe(exc)})",
                                    unavailable=True))
    return results


def _sync_one(api: HfApi, repo_id: str, local: str, *, dry_run: bool, revision: str, force: bool,
              policy: RetryPolicy) -> CardSync:
    try:
        head = with_retries(lambda: api.repo_info(repo_id, revision=revision).sha, what="reading the head",
                            policy=policy)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return CardSync(repo_id, "error", error=f"{repo_id}@{revision} does not exist on the Hub; push the run first")
    try:
        remote: str | None = download_text(api, repo_id, CARD_FILE, head, policy)
    except EntryNotFoundError:
        remote = None
    diff = card_diff(repo_id, remote, local)
    if not diff:
        return CardSync(repo_id, "unchanged", commit=head)
    if dry_run:
        return CardSync(repo_id, "would-update", diff=diff)
    if not force and (remote is None or not is_publish_pruned_card(remote)):
        return CardSync(repo_id, "error", diff=diff, error=f"the {CARD_FILE} of {repo_id} was not written by "
                        "publish-pruned; pass --force to replace it")
    added = sum(1 for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++"))
    removed = sum(1 for line in diff.splitlines() if line.startswith("-") and not line.startswith("---"))

    def attempt() -> str:
        op = CommitOperationAdd(path_in_repo=CARD_FILE, path_or_fileobj=local.encode())
        return api.create_commit(repo_id, [op], commit_message=SYNC_MESSAGE, revision=revision, parent_commit=head,
                                 commit_description=f"Card only: +{added} -{removed} lines.").oid

    def landed(_exc: BaseException | None = None) -> str | None:
        now = with_retries(lambda: api.repo_info(repo_id, revision=revision).sha, what="reading the head",
                           policy=policy)
        return now if now != head and download_text(api, repo_id, CARD_FILE, now, policy) == local else None

    try:
        commit = with_retries(attempt, what=f"card commit to {repo_id}", policy=policy, before_retry=landed)
    except HfHubHTTPError as exc:
        if status_of(exc) != 412:
            raise
        found = landed()
        if found is None:
            return CardSync(repo_id, "error", diff=diff, error=f"{repo_id} changed after the diff was made; "
                            "nothing was committed, run card sync again")
        commit = found
    return CardSync(repo_id, "updated", diff=diff, commit=commit)
