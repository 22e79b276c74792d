"""On-disk state of the Hub emulator: content-addressed blobs and git-like repositories.

Layout under ``root`` (plain files a user can inspect; collections: see ``collections_api.py``)::

    blobs/<sha256>              the bytes of every file ever stored, LFS or regular
    tmp/                        partial uploads, renamed into ``blobs/`` once complete and verified
    repos/<ns>/<name>/          model repos (``datasets/<ns>/<name>/``, ``spaces/<ns>/<name>/`` for the others)
        repo.json               {"type", "private", "owner", "created"}
        refs.json               {"branches": {name: oid}, "tags": {name: oid}, "prs": {"<num>": {...}}}
        commits/<oid>.json      {"parent", "message", "description", "author", "date", "files"}

A commit stores the full file map (path -> {sha256, size, git_sha1, lfs}); its id is the sha1 of its JSON.
Every JSON file is written to a temporary file and renamed, and every read-check-write of ``refs.json`` runs
under one lock, so a commit is all-or-nothing and two commits with the same parent cannot both succeed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

DEFAULT_BRANCH = "main"
REPO_TYPES = ("model", "dataset", "space")
_TYPE_DIRS = {"model": "repos", "dataset": "datasets", "space": "spaces"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_OID_RE = re.compile(r"^[0-9a-f]{40}$")
_PR_RE = re.compile(r"^refs/pr/([1-9][0-9]*)$")
_BAD_REF_CHARS = re.compile(r"[\x00-\x20~^:?*\[\\\x7f]")
CHUNK_SIZE = 1 << 20


class HubError(Exception):
    """A failure with an HTTP status, an optional ``X-Error-Code`` and extra JSON body fields."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra
        self.headers: dict[str, str] = {}


def repo_not_found(repo_id: str) -> HubError:
    return HubError(404, f"Repository not found: {repo_id}", "RepoNotFound")


def revision_not_found(revision: str) -> HubError:
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


def entry_not_found(path: str) -> HubError:
    return HubError(404, f"Entry not found: {path}", "EntryNotFound")


def now_iso() -> str:
    """The current UTC time in the Hub's format, e.g. ``2026-11-28T12:38:43.094Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def git_blob_sha1(data: bytes) -> str:
    """The id git gives a blob with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file that stands for an LFS object in git."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def is_sha256(oid: str) -> bool:
    """Whether ``oid`` is a lowercase hex sha256."""
    return bool(_SHA256_RE.match(oid))


def valid_name(name: str) -> bool:
    """Whether ``name`` is acceptable as a namespace or repo name."""
    return bool(_NAME_RE.match(name)) and ".." not in name and not name.endswith(".git")


def valid_ref_name(name: str) -> bool:
    """Whether ``name`` is acceptable as a branch or tag name (``/`` allowed, git's rules otherwise)."""
    return (
        bool(name)
        and not _BAD_REF_CHARS.search(name)
        and ".." not in name
        and "//" not in name
        and not name.startswith(("/", "refs/", "-"))
        and not name.endswith(("/", ".", ".lock"))
    )


def normalize_path(path: str) -> str:
    """Validate a repo file path; a HubError(400) for absolute, empty or ``..`` paths."""
    parts = path.split("/")
    if not path or any(part in ("", ".", "..") for part in parts) or parts[0] == ".git":
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


@dataclass(frozen=True)
class RepoId:
    """A repository: its type (model, dataset, space), namespace and name."""

    type: str
    namespace: str
    name: str

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def url_path(self) -> str:
        """The path of the repo's web page, e.g. ``datasets/ns/name``."""
        return _URL_PREFIXES[self.type] + self.id


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit. ``git_sha1`` is the git blob id (of the pointer file for LFS files)."""

    sha256: str
    size: int
    git_sha1: str
    lfs: bool

    def tree_entry(self, path: str) -> dict[str, Any]:
        """The file as the tree and paths-info endpoints list it."""
        entry: dict[str, Any] = {"type": "file", "oid": self.git_sha1, "size": self.size, "path": path}
        if self.lfs:
            pointer_size = len(lfs_pointer(self.sha256, self.size))
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": pointer_size}
        return entry


# An operation of a commit: ("put", path, entry), ("delete_file", path, None), ("delete_folder", path, None).
Operation = tuple[str, str, "FileEntry | None"]


def _folder_oid(files: dict[str, FileEntry], folder: str) -> str:
    """A stable id for a folder's content (not git's tree id, but changes exactly when the content does)."""
    prefix = folder + "/"
    digest = hashlib.sha1()
    for path in sorted(p for p in files if p.startswith(prefix)):
        digest.update(f"{path}\0{files[path].git_sha1}\n".encode())
    return digest.hexdigest()


def _folder_entry(files: dict[str, FileEntry], folder: str) -> dict[str, Any]:
    return {"type": "directory", "oid": _folder_oid(files, folder), "size": 0, "path": folder}


def list_tree(files: dict[str, FileEntry], folder: str, recursive: bool) -> list[dict[str, Any]]:
    """Tree entries (files and folders) under ``folder``; EntryNotFound if it is not a folder."""
    folder = folder.strip("/")
    prefix = f"{folder}/" if folder else ""
    if folder and not any(path.startswith(prefix) for path in files):
        raise entry_not_found(folder)
    folders: set[str] = set()
    entries = []
    for path, entry in files.items():
        if not path.startswith(prefix):
            continue
        parts = path[len(prefix) :].split("/")
        if recursive or len(parts) == 1:
            entries.append(entry.tree_entry(path))
        stop = len(parts) if recursive else min(len(parts), 2)
        folders.update(prefix + "/".join(parts[:i]) for i in range(1, stop))
    entries.extend(_folder_entry(files, name) for name in folders)
    return sorted(entries, key=lambda item: item["path"])


def path_info(files: dict[str, FileEntry], path: str) -> dict[str, Any] | None:
    """The tree entry of a file or folder, or None if nothing is there."""
    path = path.strip("/")
    if path in files:
        return files[path].tree_entry(path)
    if path and any(p.startswith(path + "/") for p in files):
        return _folder_entry(files, path)
    return None


def _read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path``, then rename it over ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Storage:
    """Blobs and repositories under one root folder; safe to share between server threads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.blobs_dir = self.root / "blobs"
        self.tmp_dir = self.root / "tmp"
        for folder in (self.blobs_dir, self.tmp_dir, *(self.root / d for d in _TYPE_DIRS.values())):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ blobs

    def blob_path(self, sha256: str) -> Path:
        if not _SHA256_RE.match(sha256):
            raise HubError(400, f"Invalid sha256 oid: {sha256!r}")
        return self.blobs_dir / sha256

    def blob_size(self, sha256: str) -> int | None:
        """The size of a stored blob, or None if it is not stored (or the oid is malformed)."""
        if not _SHA256_RE.match(sha256):
            return None
        try:
            return (self.blobs_dir / sha256).stat().st_size
        except FileNotFoundError:
            return None

    def write_blob(
        self, chunks: Iterable[bytes], *, expected_sha256: str | None = None, expected_size: int | None = None
    ) -> tuple[str, int]:
        """Stream chunks to a temporary file, check hash and size, then rename it to ``blobs/<sha256>``."""
        digest = hashlib.sha256()
        size = 0
        fd, tmp = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        try:
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    fh.write(chunk)
            sha256 = digest.hexdigest()
            if expected_size is not None and size != expected_size:
                raise HubError(400, f"Size mismatch: expected {expected_size} bytes, received {size}")
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise HubError(400, f"sha256 mismatch: expected {expected_sha256}, received {sha256}")
            os.replace(tmp, self.blobs_dir / sha256)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return sha256, size

    def put_regular(self, data: bytes) -> FileEntry:
        """Store the content of a regular (non-LFS) file."""
        sha256, size = self.write_blob([data])
        return FileEntry(sha256, size, git_blob_sha1(data), lfs=False)

    def lfs_entry(self, sha256: str, size: int | None) -> FileEntry:
        """The entry of an already uploaded LFS object; HubError(422) if it was never uploaded."""
        stored = self.blob_size(sha256)
        if stored is None:
            raise HubError(422, f"LFS object {sha256} was not uploaded; upload it before committing")
        if size is not None and size != stored:
            raise HubError(422, f"LFS object {sha256} has {stored} bytes, the commit says {size}")
        return FileEntry(sha256, stored, git_blob_sha1(lfs_pointer(sha256, stored)), lfs=True)

    def iter_blob(self, sha256: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes ``[start, end)`` of a blob, in chunks."""
        with open(self.blob_path(sha256), "rb") as fh:
            fh.seek(start)
            remaining = (end if end is not None else os.fstat(fh.fileno()).st_size) - start
            while remaining > 0:
                chunk = fh.read(min(CHUNK_SIZE, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                yield chunk

    # ------------------------------------------------------------------ repos

    def repo_dir(self, repo: RepoId) -> Path:
        return self.root / _TYPE_DIRS[repo.type] / repo.namespace / repo.name

    def repo_meta(self, repo: RepoId) -> dict[str, Any] | None:
        """The content of ``repo.json``, or None if the repo does not exist."""
        try:
            return _read_json(self.repo_dir(repo) / "repo.json")
        except FileNotFoundError:
            return None

    def create_repo(self, repo: RepoId, *, private: bool, owner: str) -> bool:
        """Create a repo with an empty initial commit on ``main``; False if it already exists."""
        with self._lock:
            target = self.repo_dir(repo)
            if target.exists():
                return False
            staging = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="repo-"))
            (staging / "commits").mkdir()
            created = now_iso()
            oid = self._write_commit(staging, None, {}, "initial commit", "", owner, created)
            refs = {"branches": {DEFAULT_BRANCH: oid}, "tags": {}, "prs": {}}
            _write_json_atomic(staging / "refs.json", refs)
            meta = {"type": repo.type, "private": private, "owner": owner, "created": created}
            _write_json_atomic(staging / "repo.json", meta)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
            return True

    def update_repo_meta(self, repo: RepoId, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` (e.g. ``{"gated": "manual", "private": True}``) into ``repo.json``."""
        with self._lock:
            meta = self.repo_meta(repo)
            if meta is None:
                raise repo_not_found(repo.id)
            meta.update(changes)
            _write_json_atomic(self.repo_dir(repo) / "repo.json", meta)
            return meta

    def changed_paths(self, repo: RepoId, oid: str) -> dict[str, str]:
        """What commit ``oid`` changed relative to its parent: path -> "added" | "modified" | "deleted"."""
        commit = self.read_commit(repo, oid)
        after = commit["files"]
        before = self.read_commit(repo, commit["parent"])["files"] if commit["parent"] else {}
        changes = {p: "added" for p in after if p not in before}
        changes.update({p: "modified" for p in after if p in before and before[p] != after[p]})
        changes.update({p: "deleted" for p in before if p not in after})
        return dict(sorted(changes.items()))

    def delete_repo(self, repo: RepoId) -> bool:
        """Delete a repo (its blobs stay); False if it does not exist."""
        with self._lock:
            target = self.repo_dir(repo)
            if not target.exists():
                return False
            trash = Path(tempfile.mkdtemp(dir=self.tmp_dir, prefix="deleted-"))
            os.replace(target, trash / "repo")
        shutil.rmtree(trash, ignore_errors=True)
        return True

    def refs(self, repo: RepoId) -> dict[str, Any]:
        """The content of ``refs.json``: branches, tags and pull requests."""
        try:
            return _read_json(self.repo_dir(repo) / "refs.json")
        except FileNotFoundError:
            raise repo_not_found(repo.id) from None

    def read_commit(self, repo: RepoId, oid: str) -> dict[str, Any]:
        if not _OID_RE.match(oid):
            raise revision_not_found(oid)
        try:
            return _read_json(self.repo_dir(repo) / "commits" / f"{oid}.json")
        except FileNotFoundError:
            raise revision_not_found(oid) from None

    def files(self, repo: RepoId, oid: str) -> dict[str, FileEntry]:
        """The file map of a commit."""
        return {path: FileEntry(**entry) for path, entry in self.read_commit(repo, oid)["files"].items()}

    def resolve(self, repo: RepoId, revision: str) -> str:
        """The commit id a revision (branch, tag, ``refs/...`` or commit id) points to."""
        refs = self.refs(repo)
        name = revision.removeprefix("refs/heads/")
        if name in refs["branches"]:
            return refs["branches"][name]
        name = revision.removeprefix("refs/tags/")
        if name in refs["tags"]:
            return refs["tags"][name]
        pr = _PR_RE.match(revision)
        if pr and pr.group(1) in refs["prs"]:
            return refs["prs"][pr.group(1)]["head"]
        if _OID_RE.match(revision) and (self.repo_dir(repo) / "commits" / f"{revision}.json").exists():
            return revision
        raise revision_not_found(revision)

    def history(self, repo: RepoId, oid: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(oid, commit) pairs from ``oid`` back to the initial commit."""
        current: str | None = oid
        while current is not None:
            commit = self.read_commit(repo, current)
            yield current, commit
            current = commit["parent"]

    def _write_commit(
        self,
        repo_dir: Path,
        parent: str | None,
        files: dict[str, FileEntry],
        message: str,
        description: str,
        author: str,
        date: str,
    ) -> str:
        commit = {
            "parent": parent,
            "message": message,
            "description": description,
            "author": author,
            "date": date,
            "files": {path: asdict(files[path]) for path in sorted(files)},
        }
        oid = hashlib.sha1(json.dumps(commit, sort_keys=True).encode()).hexdigest()
        _write_json_atomic(repo_dir / "commits" / f"{oid}.json", commit)
        return oid

    def commit(
        self,
        repo: RepoId,
        revision: str,
        operations: list[Operation],
        *,
        summary: str,
        description: str,
        author: str,
        parent_commit: str | None = None,
        create_pr: bool = False,
    ) -> tuple[str, int | None]:
        """Apply operations on top of a branch or ``refs/pr/N``; returns (commit id, PR number or None).

        With ``create_pr`` the revision must be a branch: a pull request against it is opened and the
        commit lands on ``refs/pr/N``. HubError 412 if ``parent_commit`` is not the head.
        """
        with self._lock:
            refs = self.refs(repo)
            branch = revision.removeprefix("refs/heads/")
            pr = _PR_RE.match(revision)
            if pr and not create_pr and pr.group(1) in refs["prs"]:
                head = refs["prs"][pr.group(1)]["head"]
            elif branch in refs["branches"]:
                head = refs["branches"][branch]
            elif revision in refs["tags"] or _OID_RE.match(revision):
                raise HubError(400, f"Cannot commit to {revision!r}: only branches and pull requests")
            else:
                raise revision_not_found(revision)
            if parent_commit and not head.startswith(parent_commit.lower()):
                raise HubError(412, f"Parent commit {parent_commit} is not the head of {revision} ({head})")
            files = _apply(self.files(repo, head), operations)
            repo_dir = self.repo_dir(repo)
            date = now_iso()
            oid = self._write_commit(repo_dir, head, files, summary, description, author, date)
            num = None
            if create_pr:
                num = self._open_pr(refs, title=summary, description=description, author=author, base=branch)
                refs["prs"][str(num)]["head"] = oid
            elif pr:
                refs["prs"][pr.group(1)]["head"] = oid
            else:
                refs["branches"][branch] = oid
            _write_json_atomic(repo_dir / "refs.json", refs)
            return oid, num

    # ------------------------------------------------------------------ refs

    def _update_refs(self, repo: RepoId, kind: str, name: str, target: str | None) -> None:
        """Create (``target`` set) or delete a branch or tag; 409 / 404 as the Hub answers."""
        with self._lock:
            refs = self.refs(repo)
            if target is None:
                if name not in refs[kind]:
                    raise revision_not_found(name)
                if kind == "branches" and name == DEFAULT_BRANCH:
                    raise HubError(403, f"Cannot delete the default branch {DEFAULT_BRANCH!r}")
                del refs[kind][name]
            else:
                if not valid_ref_name(name):
                    raise HubError(400, f"Invalid reference name: {name!r}")
                if name in refs[kind]:
                    raise HubError(409, f"Reference already exists: {name}")
                refs[kind][name] = target
            _write_json_atomic(self.repo_dir(repo) / "refs.json", refs)

    def create_branch(self, repo: RepoId, branch: str, starting_point: str = DEFAULT_BRANCH) -> None:
        with self._lock:
            self._update_refs(repo, "branches", branch, self.resolve(repo, starting_point))

    def delete_branch(self, repo: RepoId, branch: str) -> None:
        self._update_refs(repo, "branches", branch, None)

    def create_tag(self, repo: RepoId, tag: str, revision: str) -> None:
        with self._lock:
            self._update_refs(repo, "tags", tag, self.resolve(repo, revision))

    def delete_tag(self, repo: RepoId, tag: str) -> None:
        self._update_refs(repo, "tags", tag, None)

    # ------------------------------------------------------------------ pull requests

    @staticmethod
    def _open_pr(refs: dict[str, Any], *, title: str, description: str, author: str, base: str) -> int:
        num = max((int(n) for n in refs["prs"]), default=0) + 1
        refs["prs"][str(num)] = {
            "head": refs["branches"][base],
            "base": base,
            "title": title,
            "description": description,
            "author": author,
            "createdAt": now_iso(),
            "status": "open",
        }
        return num

    def create_pull_request(
        self, repo: RepoId, *, title: str, description: str, author: str, base: str = DEFAULT_BRANCH
    ) -> int:
        """Open a pull request: ``refs/pr/N`` starts at the head of ``base``; returns N."""
        with self._lock:
            refs = self.refs(repo)
            if base not in refs["branches"]:
                raise revision_not_found(base)
            num = self._open_pr(refs, title=title, description=description, author=author, base=base)
            _write_json_atomic(self.repo_dir(repo) / "refs.json", refs)
            return num


def _apply(files: dict[str, FileEntry], operations: list[Operation]) -> dict[str, FileEntry]:
    """The file map after the operations, in order; EntryNotFound for deleting what is not there."""
    for kind, path, entry in operations:
        if kind == "put" and entry is not None:
            files[normalize_path(path)] = entry
        elif kind == "delete_file":
            if files.pop(path, None) is None:
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
        elif kind == "delete_folder":
            prefix = path.strip("/") + "/"
            doomed = [p for p in files if p.startswith(prefix)] if prefix != "/" else list(files)
            if not doomed:
                raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
            for p in doomed:
                del files[p]
        else:
            raise HubError(400, f"Unknown commit operation {kind!r}")
    return files
