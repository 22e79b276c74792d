"""Push a run folder to the Hub in one atomic commit, then verify what landed.

    >>> api = HfApi(endpoint=endpoint, token=resolve_token(token_file))
    >>> user = check_write_access(api)                      # fails in seconds on a bad token
    >>> record = publish_run(api, "alice/m-magnitude-s50", Path("runs/m"), files, private=False,
    ...                      message="Publish magnitude s50", results=results,
    ...                      options=PushOptions(branch="pruned/v1", tag="v1/s50", gated="manual",
    ...                                          collection="Pruned models"))
    >>> record.url, record.commit, record.changed, record.committed

Guarantees:

* Atomic: one commit; the Hub repo is either untouched or complete. A repo this call created is deleted
  again when the commit fails.
* Optimistic concurrency: the commit carries `parentCommit` = the head seen before uploading, so a push never
  overwrites a commit it did not see (HTTP 412 -> PublishError, nothing written).
* Safe: it refuses to write into a repo whose card publish-pruned did not write, or that holds another base
  model's derivative (`remote.check_ownership`), unless `force`.
* Idempotent: only files whose remote copy differs are uploaded and committed; an identical run makes no commit.
  Files the previous publish-pruned run published but this one lacks (e.g. an old shard) are deleted.
* Resumable: transient failures (drops, 5xx, 429, timeouts) are retried with backoff; LFS objects already
  stored are never uploaded again, and a commit whose answer was lost is recognised instead of repeated.
* Verified: remote sizes and hashes are compared with the run, and the zeros of one downloaded weight shard
  are re-counted against `results.json`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

from ..errors import HubAuthError, PublishError, SettingsError
from ..results import FileDigest, Results
from .extras import GATED_MODES, ensure_in_collection, ensure_settings, ensure_tag
from .remote import CARD_FILE, RESULTS_FILE, RemoteState, check_ownership, inspect_remote
from .retry import RetryPolicy, describe, is_transient, status_of, with_retries
from .verify import differences, git_blob_sha1, remote_files, verify_remote, verify_sparsity

__all__ = ["PublishRecord", "PushOptions", "check_write_access", "git_blob_sha1", "publish_run", "verify_remote"]

log = logging.getLogger(__name__)

WRITE_ROLES = {"write", "fineGrained", "admin"}  # fine-grained tokens are checked by the Hub per repo
DEFAULT_BRANCH = "main"
PLOTS_DIR = "plots/"
_QUERY = re.compile(r"\?[^\s'\"]+")
# git's ref-name rules (git check-ref-format), which the Hub applies to branches and tags
_BAD_REF = re.compile(r"(^[/.]|[/.]$|\.\.|//|/\.|@\{|\.lock$|\.lock/|[\x00-\x20\x7f~^:?*\[\\])")


@dataclass(frozen=True)
class PushOptions:
    """Where and how to publish, beyond the repo id. The defaults reproduce a plain push to `main`."""

    branch: str = DEFAULT_BRANCH  # created from main when missing; names may contain '/'
    create_pr: bool = False  # open a pull request against `branch` instead of committing to it
    tag: str | None = None  # tag the published commit (names may contain '/')
    gated: str | None = None  # "auto" | "manual": gate access to the repo
    collection: str | None = None  # a collection slug or title (created when missing); the model is added once
    force: bool = False  # write over a foreign card / another base model's repo; move an existing tag
    verify_sparsity: bool = True  # re-count zeros of one downloaded shard (needs `results`)
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    def __post_init__(self) -> None:
        """Names the Hub would refuse are refused here, before a repo is created or a file uploaded."""
        for what, name in (("branch", self.branch), ("tag", self.tag)):
            if name is not None and (not isinstance(name, str) or not name or name == "@" or _BAD_REF.search(name)):
                raise SettingsError(f"--{what} {name!r} is not a valid git ref name (no spaces, '..', '~^:?*[\\', "
                                    "leading or trailing '/' or '.')")
        if self.gated is not None and self.gated not in GATED_MODES:
            raise SettingsError(f"--gated must be one of {', '.join(GATED_MODES)}, got {self.gated!r}")


@dataclass
class PublishRecord:
    repo_id: str
    url: str
    commit: str
    created_repo: bool
    changed: bool  # False when the Hub already held identical files (no commit was made)
    verified_files: int
    revision: str = DEFAULT_BRANCH  # the branch, or refs/pr/N, holding `commit`
    pr_url: str | None = None
    committed: list[str] = field(default_factory=list)  # paths uploaded or changed by this push
    deleted: list[str] = field(default_factory=list)  # stale paths of the previous run that were removed
    tag: str | None = None
    gated: str | None = None
    collection: str | None = None  # slug
    sparsity_check: dict[str, Any] | None = None  # the shard re-measured after the push


def check_write_access(api: HfApi) -> str:
    """Return the token's user name; raise HubAuthError for a missing, invalid or read-only token."""
    try:
        info = with_retries(api.whoami, what="checking the token", policy=RetryPolicy(attempts=3, base_s=1))
    except LocalTokenNotFoundError:
        raise HubAuthError(
            "no Hub token: set HF_TOKEN or run `hf auth login` (or use --dry-run, or --hub local to rehearse)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        if is_transient(exc):  # 408/429/5xx: says nothing about the token
            raise HubAuthError(f"the Hub is unavailable to check the token (HTTP {status}); retry later") from None
        raise HubAuthError(f"the Hub rejected the token (HTTP {status}); check HF_TOKEN or your login") from None
    except OSError as exc:
        raise HubAuthError(f"cannot reach the Hub to check the token ({type(exc).__name__})") from None
    except Exception as exc:
        if is_transient(exc):  # httpx network errors are not OSErrors
            raise HubAuthError(f"cannot reach the Hub to check the token ({describe(exc)})") from None
        raise
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role is not None and role not in WRITE_ROLES:
        raise HubAuthError(f"the token of {info.get('name')} is {role!r}-only; publishing needs a write token")
    return info["name"]


def publish_run(api: HfApi, repo_id: str, folder: Path, files: dict[str, FileDigest], *, private: bool,
                message: str, description: str = "", results: Results | None = None,
                options: PushOptions | None = None) -> PublishRecord:
    """Create the repo if needed, commit what differs from the Hub in one commit, verify, then tag/gate/collect."""
    opts = options or PushOptions()
    policy = opts.retry
    with _preparing(repo_id):
        existed = with_retries(lambda: api.repo_exists(repo_id), what="looking up the repo", policy=policy)
    head_before: str | None = None
    try:  # from here until the commit lands, any failure (Ctrl-C included) removes a repo this push created
        with _preparing(repo_id):
            url = str(with_retries(lambda: api.create_repo(repo_id, private=private, exist_ok=True),
                                   what="creating the repo", policy=policy))
            if opts.branch != DEFAULT_BRANCH and not with_retries(
                    lambda: api.revision_exists(repo_id, opts.branch), what="looking up the branch", policy=policy):
                with_retries(lambda: api.create_branch(repo_id, branch=opts.branch, exist_ok=True),
                             what="creating the branch", policy=policy)
            head_before = with_retries(lambda: api.repo_info(repo_id, revision=opts.branch).sha,
                                       what="reading the head commit", policy=policy)
            remote = inspect_remote(api, repo_id, head_before, policy)
        check_ownership(remote, results, force=opts.force)

        changed_paths = sorted(differences(remote.files, folder, files))
        stale = stale_paths(remote, files)
        record = PublishRecord(repo_id=repo_id, url=url, commit=head_before, created_repo=not existed,
                               changed=False, verified_files=0, revision=opts.branch, committed=changed_paths,
                               deleted=stale)
        if changed_paths or stale:
            full_description = describe_commit(description, changed_paths, stale, files)
            try:
                if opts.create_pr:
                    record.commit, record.revision, record.pr_url, record.changed = _propose(
                        api, repo_id, folder, files, changed_paths, stale, message, full_description, opts,
                        head_before)
                else:
                    record.commit = _commit(api, repo_id, folder, files, changed_paths, stale, message,
                                            full_description, opts, head_before)
                    record.changed = record.commit != head_before
            except Exception as exc:
                if isinstance(exc, PublishError):
                    raise
                raise PublishError(f"upload to {repo_id} failed, nothing was committed: {_reason(exc)}") from None
    except BaseException:
        if not existed:
            _delete_if_untouched(api, repo_id, head_before)
        raise
    if not record.changed:
        record.committed, record.deleted = [], []
    try:
        record.verified_files = verify_remote(api, repo_id, record.commit, folder, files, policy)
        if results is not None and opts.verify_sparsity:
            check = verify_sparsity(api, repo_id, record.commit, folder, files, results, policy)
            record.sparsity_check = asdict(check) if check else None
        _finish(api, record, opts, private=private and existed)
    except HfHubHTTPError as exc:
        raise PublishError(f"{repo_id} was published at {record.commit[:12]}, but {_reason(exc)}") from None
    except Exception as exc:
        if not is_transient(exc):
            raise
        raise PublishError(f"{repo_id} was published at {record.commit[:12]}, but the Hub stopped answering while "
                           f"verifying it ({describe(exc)}); re-run to verify and finish") from None
    return record


def finish_published(api: HfApi, repo_id: str, commit: str, opts: PushOptions, *, private: bool) -> PublishRecord:
    """For a commit the Hub already holds (a release skipping an identical artifact): tag it, gate or hide the
    repo and add it to the collection, as a publish would; each step is idempotent."""
    record = PublishRecord(repo_id=repo_id, url=f"{api.endpoint}/{repo_id}", commit=commit, created_repo=False,
                           changed=False, verified_files=0, revision=opts.branch)
    try:
        _finish(api, record, opts, private=private)
    except HfHubHTTPError as exc:
        raise PublishError(f"{repo_id} holds the artifact at {commit[:12]}, but {_reason(exc)}") from None
    return record


def _finish(api: HfApi, record: PublishRecord, opts: PushOptions, *, private: bool) -> None:
    """Tag, gate / hide and add to a collection; all idempotent and retried."""
    if opts.tag:
        ensure_tag(api, record.repo_id, opts.tag, record.commit, force=opts.force,
                   message=f"publish-pruned: {record.commit[:12]}", policy=opts.retry)
        record.tag = opts.tag
    if opts.gated or private:
        ensure_settings(api, record.repo_id, gated=opts.gated, private=private, policy=opts.retry)
        record.gated = opts.gated
    if opts.collection:
        record.collection = ensure_in_collection(api, record.repo_id, opts.collection, policy=opts.retry)


def stale_paths(remote: RemoteState, files: dict[str, FileDigest]) -> list[str]:
    """Remote files the previous publish-pruned run published that this run does not have (e.g. old shards)."""
    previous = set((remote.results or {}).get("files") or {})
    previous |= {CARD_FILE, RESULTS_FILE} | {p for p in remote.files if p.startswith(PLOTS_DIR)}
    return sorted(p for p in previous if p in remote.files and p not in files)


def describe_commit(description: str, changed: list[str], deleted: list[str], files: dict[str, FileDigest]) -> str:
    """The commit description: the caller's text, then what this commit uploads and removes."""
    lines = [description.strip()] if description.strip() else []
    if changed:
        size = sum(files[p].size for p in changed)
        lines.append(f"Uploads {len(changed)} file(s), {size / 1e6:.1f} MB: " + ", ".join(changed))
    if deleted:
        lines.append(f"Removes {len(deleted)} file(s) of the previous run: " + ", ".join(deleted))
    return "\n\n".join(lines)


def _operations(folder: Path, changed: list[str], stale: list[str]) -> list[Any]:
    ops: list[Any] = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in changed]
    return ops + [CommitOperationDelete(path_in_repo=name) for name in stale]


def _holds_run(api: HfApi, repo_id: str, revision: str, folder: Path, files: dict[str, FileDigest],
               stale: list[str], policy: RetryPolicy) -> bool:
    remote = remote_files(api, repo_id, revision, policy)
    return not differences(remote, folder, files) and not any(p in remote for p in stale)


def _commit(api: HfApi, repo_id: str, folder: Path, files: dict[str, FileDigest], changed: list[str],
            stale: list[str], message: str, description: str, opts: PushOptions, head_before: str) -> str:
    """One commit on `opts.branch` with parentCommit = `head_before`; returns the commit id now holding the run."""
    operations = _operations(folder, changed, stale)  # reused across retries: uploaded objects are remembered

    def landed(_exc: BaseException | None = None) -> str | None:
        """The new head, if it already holds the run (our commit whose answer was lost)."""
        head = with_retries(lambda: api.repo_info(repo_id, revision=opts.branch).sha, what="reading the head",
                            policy=opts.retry)
        if head != head_before and _holds_run(api, repo_id, head, folder, files, stale, opts.retry):
            return head
        return None

    def attempt() -> str:
        return api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 revision=opts.branch, parent_commit=head_before).oid

    try:
        return with_retries(attempt, what=f"upload to {repo_id}", policy=opts.retry, before_retry=landed)
    except HfHubHTTPError as exc:
        if status_of(exc) != 412:
            raise
        head = landed()
        if head is not None:
            return head
        raise PublishError(f"{repo_id}@{opts.branch} changed while uploading (someone else committed after "
                           f"{head_before[:12]}); nothing was committed. Re-run to publish on top of it") from None


def _propose(api: HfApi, repo_id: str, folder: Path, files: dict[str, FileDigest], changed: list[str],
             stale: list[str], message: str, description: str, opts: PushOptions,
             head_before: str) -> tuple[str, str, str | None, bool]:
    """Open a pull request against `opts.branch` holding the run, or find the open one that already does.

    Returns (commit, refs/pr/N, pull request URL, whether a commit was made).
    """
    def open_pr(_exc: BaseException | None = None) -> tuple[str, str, str | None, bool] | None:
        refs = with_retries(lambda: api.list_repo_refs(repo_id, include_pull_requests=True), what="listing PRs",
                            policy=opts.retry)
        heads = {ref.ref: ref.target_commit for ref in refs.pull_requests or []}
        discussions = with_retries(lambda: list(api.get_repo_discussions(repo_id, discussion_type="pull_request",
                                                                         discussion_status="open")),
                                   what="listing PRs", policy=opts.retry)
        for pr in discussions:
            head = heads.get(f"refs/pr/{pr.num}")
            if pr.title == message and head and _holds_run(api, repo_id, head, folder, files, stale, opts.retry):
                return head, f"refs/pr/{pr.num}", pr.url, _exc is not None
        return None

    existing = open_pr()
    if existing is not None:
        return existing
    operations = _operations(folder, changed, stale)

    def attempt() -> tuple[str, str, str | None, bool]:
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 revision=opts.branch, create_pr=True, parent_commit=head_before)
        return info.oid, info.pr_revision or "", info.pr_url, True

    try:
        return with_retries(attempt, what=f"pull request to {repo_id}", policy=opts.retry, before_retry=open_pr)
    except HfHubHTTPError as exc:
        if status_of(exc) != 412:
            raise
        raise PublishError(f"{repo_id}@{opts.branch} changed while uploading; no pull request was opened. "
                           "Re-run to propose on top of it") from None


@contextlib.contextmanager
def _preparing(repo_id: str) -> Iterator[None]:
    """Hub errors while looking up or creating the repo, as one-line PublishErrors."""
    try:
        yield
    except HfHubHTTPError as exc:
        raise PublishError(f"cannot prepare {repo_id}: {_reason(exc)}") from None
    except Exception as exc:
        if is_transient(exc):
            raise PublishError(f"cannot reach the Hub to prepare {repo_id} ({describe(exc)})") from None
        raise


def _delete_if_untouched(api: HfApi, repo_id: str, head_before: str | None) -> None:
    """Delete a repo this push created, unless someone committed to it meanwhile (a concurrent push).

    `head_before` None: interrupted before the head was read, so only a repo with its first commit alone goes.
    """
    try:
        if head_before is None:
            if not api.repo_exists(repo_id) or len(api.list_repo_commits(repo_id)) > 1:
                return
        elif api.repo_info(repo_id).sha != head_before:
            return
        api.delete_repo(repo_id, missing_ok=True)
    except Exception as exc:  # the original failure matters more; say what was left behind
        log.warning("could not delete the empty repo %s after a failed upload (%s)", repo_id, type(exc).__name__)


def _reason(exc: Exception) -> str:
    """A Hub error on one line (its detail often comes on the next), without URLs' query strings."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    return _QUERY.sub("?…", text)[:300]  # upload URLs carry signatures in their query string
