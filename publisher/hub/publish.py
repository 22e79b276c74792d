"""Push a run folder to the Hub in one commit, then verify what landed.

    >>> api = HfApi(endpoint=endpoint, token=token)
    >>> user = check_write_access(api)                      # fails in seconds on a bad token
    >>> record = publish_run(api, "alice/m-magnitude-s50", Path("runs/m"), files, private=False,
    ...                      message="Publish magnitude s50")
    >>> record.url, record.commit

The Hub repo is either untouched or complete: a repo this call created is deleted again when the commit
fails, and the commit itself is atomic on the Hub side.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import CommitOperationAdd, HfApi
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError
from huggingface_hub.hf_api import RepoFile

from ..errors import HubAuthError, PublishError
from ..results import FileDigest

log = logging.getLogger(__name__)

WRITE_ROLES = {"write", "fineGrained", "admin"}  # fine-grained tokens are checked by the Hub per repo


@dataclass
class PublishRecord:
    repo_id: str
    url: str
    commit: str
    created_repo: bool
    changed: bool  # False when the Hub already held identical files (no commit was made)
    verified_files: int


def check_write_access(api: HfApi) -> str:
    """Return the token's user name; raise HubAuthError for a missing, invalid or read-only token."""
    try:
        info = api.whoami()
    except LocalTokenNotFoundError:
        raise HubAuthError(
            "no Hub token: set HF_TOKEN or run `hf auth login` (or use --dry-run, or --hub local to rehearse)"
        ) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise HubAuthError(f"the Hub rejected the token (HTTP {status}); check HF_TOKEN or your login") from None
    except OSError as exc:
        raise HubAuthError(f"cannot reach the Hub to check the token ({type(exc).__name__})") from None
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role is not None and role not in WRITE_ROLES:
        raise HubAuthError(f"the token of {info.get('name')} is {role!r}-only; publishing needs a write token")
    return info["name"]


def git_blob_sha1(path: Path) -> str:
    """The git object id the Hub reports for a regular (non-LFS) file."""
    digest = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def publish_run(api: HfApi, repo_id: str, folder: Path, files: dict[str, FileDigest], *, private: bool,
                message: str, description: str = "") -> PublishRecord:
    """Create the repo if needed and commit every file of `files` in one commit; then verify."""
    try:
        existed = api.repo_exists(repo_id)
        head_before = api.repo_info(repo_id).sha if existed else None
        url = str(api.create_repo(repo_id, private=private, exist_ok=True))
    except HfHubHTTPError as exc:
        raise PublishError(f"cannot create {repo_id}: {_reason(exc)}") from None
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in files]
    try:
        info = api.create_commit(repo_id, operations, commit_message=message, commit_description=description,
                                 parent_commit=head_before)
    except (HfHubHTTPError, OSError, ValueError) as exc:
        if not existed:
            _delete_quietly(api, repo_id)
        raise PublishError(f"upload to {repo_id} failed, nothing was committed: {_reason(exc)}") from None
    except BaseException:  # Ctrl-C mid-upload: no commit happened; leave no empty repo behind
        if not existed:
            _delete_quietly(api, repo_id)
        raise
    verified = verify_remote(api, repo_id, info.oid, folder, files)
    return PublishRecord(repo_id=repo_id, url=url, commit=info.oid, created_repo=not existed,
                         changed=info.oid != head_before, verified_files=verified)


def verify_remote(api: HfApi, repo_id: str, revision: str, folder: Path, files: dict[str, FileDigest]) -> int:
    """Compare the remote tree at `revision` with the local files (sizes, sha256 or git blob id)."""
    tree = api.list_repo_tree(repo_id, revision=revision, recursive=True)
    remote = {e.path: e for e in tree if isinstance(e, RepoFile)}
    problems = []
    for name, digest in files.items():
        entry = remote.get(name)
        if entry is None:
            problems.append(f"{name} missing")
        elif entry.size != digest.size:
            problems.append(f"{name} is {entry.size} bytes remotely, {digest.size} locally")
        elif entry.lfs is not None and entry.lfs.sha256 != digest.sha256:
            problems.append(f"{name} sha256 differs")
        elif entry.lfs is None and entry.blob_id != git_blob_sha1(folder / name):
            problems.append(f"{name} content differs")
    if problems:
        raise PublishError(f"remote files of {repo_id}@{revision[:12]} do not match the run: {'; '.join(problems)}")
    return len(files)


def _delete_quietly(api: HfApi, repo_id: str) -> None:
    try:
        api.delete_repo(repo_id, missing_ok=True)
    except Exception as exc:  # the original failure matters more; say what was left behind
        log.warning("could not delete the empty repo %s after a failed upload (%s)", repo_id, type(exc).__name__)


def _reason(exc: Exception) -> str:
    """The first line of a Hub error, without request ids or URLs with query strings."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
