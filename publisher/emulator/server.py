"""A local HTTP server that speaks enough of the Hugging Face Hub protocol for the real client.

Stdlib only. Serves HTTP/1.1 with keep-alive and ``Content-Length`` on every response. The endpoints and
their quirks follow ``docs/hub-protocol.md`` (§2); LFS uploads go through self-authorizing signed URLs on
the same host and port, downloads are served inline, Xet is refused with a clear message.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from .collections_api import CollectionRoutes, CollectionStore
from .faults import Fault, FaultRegistry
from .refs_api import RefRoutes
from .storage import (
    CHUNK_SIZE,
    DEFAULT_BRANCH,
    REPO_TYPES,
    HubError,
    Operation,
    RepoId,
    Storage,
    entry_not_found,
    is_sha256,
    list_tree,
    path_info,
    repo_not_found,
    valid_name,
)

LFS_MIN_SIZE = 10 * 1024 * 1024
# Weights, archives and media: stored as LFS whatever their size, like the Hub's default .gitattributes.
LFS_EXTENSIONS = frozenset(
    {".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".pb", ".tflite"}
    | {".npy", ".npz", ".pkl", ".pickle", ".joblib", ".arrow", ".parquet", ".model", ".ot"}
    | {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".zst", ".7z", ".rar"}
    | {".png", ".jpg", ".jpeg", ".gif", ".webp", ".wav", ".mp3", ".flac", ".ogg", ".mp4", ".pdf"}
)
PAGE_SIZE = 1000
SIGNED_URL_TTL_S = 3600
XET_MESSAGE = (
    "This Hub emulator does not implement Xet storage: run the client with HF_HUB_DISABLE_XET=1 "
    "set before importing huggingface_hub."
)
_TYPE_PLURALS = {f"{t}s": t for t in REPO_TYPES}


class User(NamedTuple):
    name: str
    role: str


class RequestRecord(NamedTuple):
    """One request as the emulator saw it: no query string (signatures), no headers (tokens)."""

    method: str
    path: str
    status: int  # 0: the connection was closed without an answer (fault or client gone)


class HubServer(ThreadingHTTPServer):
    """The HTTP server: holds the storage, the tokens and the key that signs LFS upload URLs."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], storage: Storage, tokens: Mapping[str, User], verbose: bool = False
    ) -> None:
        self.storage = storage
        self.tokens = dict(tokens)
        self.verbose = verbose
        self.signing_key = os.urandom(32)
        self.faults = FaultRegistry()
        self.collections = CollectionStore(storage)
        self.requests: deque[RequestRecord] = deque(maxlen=10_000)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, HubHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Close kept-alive client connections, so a stopped server answers nothing more."""
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def sign(self, oid: str, size: int, expires: int) -> str:
        message = f"{oid}:{size}:{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()


class HubHandler(CollectionRoutes, RefRoutes, BaseHTTPRequestHandler):
    """One request: routing, auth, body reading and the endpoint implementations."""

    protocol_version = "HTTP/1.1"
    server_version = "HubEmulator/0.1"
    server: HubServer
    timeout = 300  # idle keep-alive connections are dropped after this many seconds
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms delayed-ACK stalls

    # ------------------------------------------------------------------ plumbing

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        if self.server.verbose:  # method, path without query (signatures), status; never headers
            sys.stderr.write(f"hub-emulator: {self.command} {urlsplit(self.path).path} -> {code}\n")

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write("hub-emulator: " + (format % args) + "\n")

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        # Split the raw path first, then decode each segment: revisions carry %2F.
        self.segments = [unquote(part) for part in split.path.split("/")[1:]]
        if self.segments and self.segments[-1] == "":
            self.segments.pop()
        self.query = parse_qs(split.query, keep_blank_values=True)
        self._body_state = "unread"  # then "reading", then "done"
        self._responded = False
        self._mute = False
        fault = self.server.faults.take(self.command, split.path)
        try:
            if fault is not None and self._inject(fault):
                return
            self._route()()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
            self._record(0)
        except Exception as exc:
            if self._responded:  # failed while streaming a body: the only honest signal left is to hang up
                self.close_connection = True
            elif isinstance(exc, HubError):
                self._discard_body()
                self._send_json(exc.extra | {"error": exc.message}, exc.status, _error_headers(exc))
            else:
                traceback.print_exc(file=sys.stderr)
                self.close_connection = True
                self._send_json({"error": f"internal error in the Hub emulator: {exc!r}"}, 500)

    def _inject(self, fault: Fault) -> bool:
        """Apply a fault; True when the request is finished (answered or dropped), False to process it."""
        if fault.kind == "delay":
            fault.hold()
            return False
        if fault.kind == "lose_response":
            self._mute = True
            return False
        if fault.kind == "drop":
            read = 0
            with contextlib.suppress(HubError):
                for chunk in self._body_chunks():
                    read += len(chunk)
                    if read >= fault.after_bytes:
                        break
            self._hang_up()
            return True
        self._discard_body()
        headers = {} if fault.retry_after is None else {"Retry-After": f"{fault.retry_after:g}"}
        self._send_json({"error": f"injected fault: HTTP {fault.status}"}, fault.status, headers)
        return True

    def _hang_up(self) -> None:
        """Close the connection without an answer."""
        self.close_connection = True
        self._responded = True
        self._record(0)
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _record(self, status: int) -> None:
        self.server.requests.append(RequestRecord(self.command, urlsplit(self.path).path, status))

    def _param(self, name: str, default: str = "") -> str:
        values = self.query.get(name)
        return values[0] if values else default

    def _flag(self, name: str) -> bool:
        return self._param(name).lower() in ("1", "true")

    def _base_url(self) -> str:
        """``http://host:port`` as the client addressed us, so returned URLs parse back (§1)."""
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        return f"http://{host}"

    def _body_chunks(self) -> Iterator[bytes]:
        """The request body in chunks (Content-Length or chunked transfer encoding); it can be read once."""
        if self._body_state != "unread":
            return
        self._body_state = "reading"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            yield from self._chunked_body()
        else:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                raise HubError(400, "Invalid Content-Length") from None
            yield from self._read_exactly(length)
        self._body_state = "done"

    def _read_exactly(self, length: int) -> Iterator[bytes]:
        while length > 0:
            chunk = self.rfile.read(min(CHUNK_SIZE, length))
            if not chunk:
                raise HubError(400, "Request body shorter than announced")
            length -= len(chunk)
            yield chunk

    def _chunked_body(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise HubError(400, "Malformed chunked request body") from None
            if size == 0:
                while self.rfile.readline(1024).strip():  # trailers
                    pass
                return
            yield from self._read_exactly(size)
            self.rfile.readline(8)

    def _discard_body(self) -> None:
        """Consume an unread body so the connection can be reused; close it if a read stopped midway."""
        if self._body_state == "unread":
            with contextlib.suppress(HubError):
                for _ in self._body_chunks():
                    pass
        if self._body_state != "done":
            self.close_connection = True

    def _read_body(self) -> bytes:
        return b"".join(self._body_chunks())

    def _read_json(self) -> Any:
        body = self._read_body()
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError:
            raise HubError(400, "Request body is not valid JSON") from None

    def _send(
        self,
        status: int,
        body: bytes | Iterator[bytes] = b"",
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        length: int | None = None,
    ) -> None:
        """Send a response with Content-Length (no body for HEAD)."""
        if isinstance(body, bytes):
            length = len(body)
        if self._mute:  # fault "lose_response": the work is done, the answer never leaves
            self._discard_body()
            self._hang_up()
            return
        self._responded = True
        self._record(status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length or 0))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command == "HEAD":
            return
        for chunk in [body] if isinstance(body, bytes) else body:
            self.wfile.write(chunk)

    def _send_json(self, data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    # ------------------------------------------------------------------ routing and auth

    def _route(self) -> Callable[[], None]:
        seg, method = self.segments, self.command
        routes: dict[tuple[str, ...], Callable[[], None]] = {
            ("GET", "api", "whoami-v2"): self._whoami,
            ("POST", "api", "repos", "create"): self._create_repo,
            ("DELETE", "api", "repos", "delete"): self._delete_repo,
            ("POST", "api", "validate-yaml"): self._validate_yaml,
            ("GET", "api", "agent-harnesses"): self._agent_harnesses,
        }
        if (method, *seg) in routes:
            return routes[(method, *seg)]
        if seg[:2] == ["api", "collections"]:
            return self._route_collections(seg[2:])
        if len(seg) >= 4 and seg[0] == "api" and seg[1] in _TYPE_PLURALS:
            return self._route_repo_api(RepoId(_TYPE_PLURALS[seg[1]], seg[2], seg[3]), seg[4:])
        if len(seg) == 2 and seg[0] == "lfs-upload" and method == "PUT":
            return lambda: self._lfs_upload(seg[1])
        if len(seg) == 2 and seg[0] == "lfs-verify" and method == "POST":
            return lambda: self._lfs_verify(seg[1])
        prefix = 1 if seg and seg[0] in _TYPE_PLURALS else 0
        repo_type = _TYPE_PLURALS[seg[0]] if prefix else "model"
        rest = seg[prefix:]
        if len(rest) >= 5 and rest[2] == "resolve" and method in ("GET", "HEAD"):
            return lambda: self._resolve(RepoId(repo_type, rest[0], rest[1]), rest[3], "/".join(rest[4:]))
        if rest[2:] == ["info", "lfs", "objects", "batch"] and rest[1].endswith(".git") and method == "POST":
            return lambda: self._lfs_batch(RepoId(repo_type, rest[0], rest[1].removesuffix(".git")))
        raise HubError(404, f"No route for {method} {urlsplit(self.path).path}")

    def _route_repo_api(self, repo: RepoId, rest: list[str]) -> Callable[[], None]:
        method = self.command
        action, args = (rest[0], rest[1:]) if rest else ("", [])
        joined = "/".join(args)
        routes: dict[tuple[str, str], Callable[[], None]] = {
            ("GET", ""): lambda: self._repo_info(repo, DEFAULT_BRANCH),
            ("GET", "revision"): lambda: self._repo_info(repo, joined),
            ("POST", "preupload"): lambda: self._preupload(repo, joined),
            ("POST", "commit"): lambda: self._commit(repo, joined),
            ("GET", "tree"): lambda: self._tree(repo, args[0], "/".join(args[1:])),
            ("POST", "paths-info"): lambda: self._paths_info(repo, joined),
            ("GET", "refs"): lambda: self._refs(repo),
            ("POST", "branch"): lambda: self._create_branch(repo, joined),
            ("DELETE", "branch"): lambda: self._delete_branch(repo, joined),
            ("POST", "tag"): lambda: self._create_tag(repo, joined),
            ("DELETE", "tag"): lambda: self._delete_tag(repo, joined),
            ("GET", "commits"): lambda: self._commits(repo, joined),
            ("POST", "discussions"): lambda: self._create_discussion(repo),
            ("GET", "discussions"): lambda: self._discussions(repo, joined),
            ("PUT", "settings"): lambda: self._update_settings(repo),
            ("GET", "xet-write-token"): self._xet,
            ("GET", "xet-read-token"): self._xet,
        }
        needs_arg = action in ("revision", "preupload", "commit", "tree", "paths-info", "branch", "tag", "commits")
        if (method, action) not in routes or (needs_arg and not args):
            raise HubError(404, f"No route for {method} {urlsplit(self.path).path}")
        return routes[(method, action)]

    def _user(self) -> User | None:
        """The user of the request's bearer token; None when absent or unknown (anonymous)."""
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.server.tokens.get(token.strip())

    def _writer(self, namespace: str | None = None) -> User:
        """The user, who must hold a write token (401 / 403), for ``namespace`` if given (403)."""
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header: a write token is required")
        if user.role != "write":
            raise HubError(403, "This token has read access only; a write token is required")
        if namespace is not None and namespace != user.name:
            raise HubError(403, f"You don't have the rights to write to the namespace {namespace!r}")
        return user

    def _reader(self, repo: RepoId) -> User | None:
        """The caller, who must be able to see ``repo`` (404 RepoNotFound for missing or others' private)."""
        user = self._user()
        self._check_visible(repo, user)
        return user

    def _repo_writer(self, repo: RepoId) -> User:
        """The caller, who must hold a write token (401/403), see ``repo`` (404) and own its namespace (403)."""
        user = self._writer()
        self._check_visible(repo, user)
        return self._writer(repo.namespace)

    def _check_visible(self, repo: RepoId, user: User | None) -> None:
        meta = None
        if valid_name(repo.namespace) and valid_name(repo.name):
            meta = self.server.storage.repo_meta(repo)
        if meta is None or (meta["private"] and (user is None or user.name != repo.namespace)):
            raise repo_not_found(repo.id)

    # ------------------------------------------------------------------ account and repos

    def _whoami(self) -> None:
        user = self._user()
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(user.name.encode()).hexdigest()[:24],
                "name": user.name,
                "fullname": user.name,
                "email": f"{user.name}@localhost",
                "emailVerified": True,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "emulator", "role": user.role}},
            }
        )

    def _repo_from_body(self, body: dict[str, Any], user: User) -> RepoId:
        repo_type = body.get("type") or "model"
        name, namespace = body.get("name"), body.get("organization") or user.name
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        if not isinstance(name, str) or not isinstance(namespace, str) or not valid_name(name):
            raise HubError(400, f"Invalid repo name: {name!r}")
        return RepoId(repo_type, namespace, name)

    def _create_repo(self) -> None:
        user = self._writer()
        body = self._read_json()
        repo = self._repo_from_body(body, user)
        self._writer(repo.namespace)
        url = f"{self._base_url()}/{repo.url_path}"
        private = body.get("visibility") == "private" or body.get("private") is True
        if not self.server.storage.create_repo(repo, private=private, owner=user.name):
            raise HubError(409, f"You already created this {repo.type} repo: {repo.id}", url=url)
        self._send_json({"url": url, "name": repo.id, "id": repo.id})

    def _delete_repo(self) -> None:
        user = self._writer()
        repo = self._repo_from_body(self._read_json(), user)
        self._writer(repo.namespace)
        if not self.server.storage.delete_repo(repo):
            raise repo_not_found(repo.id)
        self._send_json({})

    def _validate_yaml(self) -> None:
        content = self._read_json().get("content") or ""
        lines = content.splitlines()
        if lines and lines[0].strip() == "---" and "---" not in (line.strip() for line in lines[1:]):
            self._send_json({"errors": [{"message": "YAML front matter is not closed by '---'"}]}, 400)
            return
        self._send_json({"errors": [], "warnings": []})

    def _update_settings(self, repo: RepoId) -> None:
        """``update_repo_settings``: ``{"gated": "auto"|"manual"|false, "visibility": "public"|"private"}``."""
        self._repo_writer(repo)
        body = self._read_json()
        changes: dict[str, Any] = {}
        if "gated" in body:
            if body["gated"] not in ("auto", "manual", False):
                raise HubError(400, f"Invalid gated value {body['gated']!r}: 'auto', 'manual' or false")
            changes["gated"] = body["gated"]
        if "visibility" in body or "private" in body:
            visibility = body.get("visibility") or ("private" if body.get("private") else "public")
            if visibility not in ("public", "private"):
                raise HubError(400, f"Invalid visibility {visibility!r}")
            changes["private"] = visibility == "private"
        if not changes:
            raise HubError(400, "Nothing to update: pass 'gated' and/or 'visibility'")
        self.server.storage.update_repo_meta(repo, changes)
        self._send_json({})

    def _agent_harnesses(self) -> None:
        self._send_json({"standardEnvVars": [], "harnesses": {}})

    def _xet(self) -> None:
        raise HubError(501, XET_MESSAGE)

    def _repo_info(self, repo: RepoId, revision: str) -> None:
        self._reader(repo)
        storage = self.server.storage
        oid = storage.resolve(repo, revision)
        commit = storage.read_commit(repo, oid)
        files = storage.files(repo, oid)
        meta = storage.repo_meta(repo) or {}
        blobs = self._flag("blobs")
        siblings = []
        for path, entry in files.items():
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.git_sha1)
                if entry.lfs:
                    sibling["lfs"] = entry.tree_entry(path)["lfs"] | {"sha256": entry.sha256}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24],
            "id": repo.id,
            "author": repo.namespace,
            "sha": oid,
            "private": meta.get("private", False),
            "disabled": False,
            "gated": meta.get("gated", False),
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "createdAt": meta.get("created"),
            "lastModified": commit["date"],
            "siblings": siblings,
            "xetEnabled": False,
        }
        if repo.type == "model":
            info["modelId"] = repo.id
        if blobs:
            info["usedStorage"] = sum(entry.size for entry in files.values())
        self._send_json(info)

    # ------------------------------------------------------------------ uploads

    def _preupload(self, repo: RepoId, revision: str) -> None:
        self._repo_writer(repo)
        storage = self.server.storage
        files = storage.files(repo, storage.resolve(repo, revision))
        answers = []
        for item in self._read_json().get("files") or []:
            path, size = item.get("path"), item.get("size")
            if not isinstance(path, str) or not isinstance(size, int):
                raise HubError(400, "Each file needs a 'path' (str) and a 'size' (int)")
            try:
                sample = base64.b64decode(item.get("sample") or "")
            except ValueError:
                raise HubError(400, f"Invalid base64 sample for {path}") from None
            lfs = size >= LFS_MIN_SIZE or b"\0" in sample or Path(path).suffix.lower() in LFS_EXTENSIONS
            # The client compares the oid with sha256 (lfs) or the git blob sha1 (regular) to skip unchanged files.
            existing = files.get(path)
            oid = None
            if existing is not None:
                oid = existing.sha256 if lfs else existing.git_sha1
            mode = "lfs" if lfs else "regular"
            answers.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send_json({"files": answers, "commitOid": None})

    def _lfs_batch(self, repo: RepoId) -> None:
        self._repo_writer(repo)
        body = self._read_json()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the 'upload' operation of the LFS batch API is supported")
        base, expires = self._base_url(), int(time.time()) + SIGNED_URL_TTL_S
        objects = []
        for obj in body.get("objects") or []:
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not isinstance(size, int) or size < 0:
                objects.append({"oid": str(oid), "size": 0, "error": {"code": 422, "message": "Invalid object"}})
                continue
            stored = self.server.storage.blob_size(oid)
            if stored == size:
                objects.append({"oid": oid, "size": size})
                continue
            if stored is not None or not is_sha256(oid):
                message = "Invalid sha256 oid" if stored is None else f"Object is stored with {stored} bytes"
                objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": message}})
                continue
            query = urlencode({"size": size, "expires": expires, "sig": self.server.sign(oid, size, expires)})
            actions = {
                "upload": {"href": f"{base}/lfs-upload/{oid}?{query}", "expires_in": SIGNED_URL_TTL_S},
                "verify": {"href": f"{base}/lfs-verify/{oid}"},
            }
            objects.append({"oid": oid, "size": size, "authenticated": True, "actions": actions})
        data = json.dumps({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}).encode()
        self._send(200, data, content_type="application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str) -> None:
        """PUT of one LFS object to a signed URL (no Authorization): stream to disk, check sha256 and size."""
        try:
            size, expires = int(self._param("size")), int(self._param("expires"))
        except ValueError:
            raise HubError(403, "Invalid upload signature") from None
        good = hmac.compare_digest(self._param("sig"), self.server.sign(oid, size, expires))
        if not good or expires < time.time():
            raise HubError(403, "Invalid or expired upload signature")
        length = self.headers.get("Content-Length")
        if length is not None and length != str(size):
            raise HubError(400, f"Content-Length {length} does not match the object size {size}")
        self.server.storage.write_blob(self._body_chunks(), expected_sha256=oid, expected_size=size)
        self._send(200)

    def _lfs_verify(self, oid: str) -> None:
        body = self._read_json()
        stored = self.server.storage.blob_size(oid)
        if stored is None or stored != body.get("size", stored):
            raise HubError(404, f"LFS object {oid} with size {body.get('size')} is not stored")
        self._send_json({"success": True})

    def _commit(self, repo: RepoId, revision: str) -> None:
        user = self._repo_writer(repo)
        storage = self.server.storage
        header: dict[str, Any] | None = None
        operations: list[Operation] = []
        for line in self._read_body().splitlines():
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
                if key == "header":
                    header = dict(value)
                else:
                    operations.append(_commit_operation(storage, key, value))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise HubError(400, f"Invalid commit line: {line[:200]!r}") from None
        if header is None:
            raise HubError(400, "The commit body must start with a header line")
        create_pr = self._flag("create_pr")
        oid, pr_num = storage.commit(
            repo,
            revision,
            operations,
            summary=header.get("summary") or "Upload files",
            description=header.get("description") or "",
            author=user.name,
            parent_commit=header.get("parentCommit"),
            create_pr=create_pr,
        )
        repo_url = f"{self._base_url()}/{repo.url_path}"
        result: dict[str, Any] = {
            "success": True,
            "commitOid": oid,
            "commitUrl": f"{repo_url}/commit/{oid}",
            "commitMessage": header.get("summary") or "",
            "hookOutput": "",
            "pullRequestUrl": f"{repo_url}/discussions/{pr_num}" if pr_num is not None else None,
        }
        self._send_json(result)

    # ------------------------------------------------------------------ listings

    def _paginate(self, items: list[Any]) -> None:
        """Send one page of ``items`` with a ``Link: rel="next"`` header when more follow."""
        cursor = self._param("cursor", "0")
        if not cursor.isdigit():
            raise HubError(400, f"Invalid cursor {cursor!r}")
        start = int(cursor)
        page = items[start : start + PAGE_SIZE]
        headers = {}
        if start + PAGE_SIZE < len(items):
            query = {k: v[0] for k, v in self.query.items()} | {"cursor": str(start + PAGE_SIZE)}
            next_url = f"{self._base_url()}{urlsplit(self.path).path}?{urlencode(query)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json(page, headers=headers)

    def _tree(self, repo: RepoId, revision: str, folder: str) -> None:
        self._reader(repo)
        storage = self.server.storage
        files = storage.files(repo, storage.resolve(repo, revision))
        self._paginate(list_tree(files, folder, recursive=self._flag("recursive")))

    def _paths_info(self, repo: RepoId, revision: str) -> None:
        self._reader(repo)
        storage = self.server.storage
        files = storage.files(repo, storage.resolve(repo, revision))
        body = self._read_body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(body or b"{}").get("paths") or []
        else:
            paths = parse_qs(body.decode(), keep_blank_values=True).get("paths", [])
        infos = [info for info in (path_info(files, path) for path in paths) if info is not None]
        self._send_json(infos)

    # ------------------------------------------------------------------ downloads

    def _resolve(self, repo: RepoId, revision: str, path: str) -> None:
        """HEAD/GET of a file, served inline; Range requests get 206 (GET)."""
        self._reader(repo)
        storage = self.server.storage
        oid = storage.resolve(repo, revision)
        entry = storage.files(repo, oid).get(path)
        if entry is None:
            err = entry_not_found(path)
            err.headers["X-Repo-Commit"] = oid  # lets the client cache the absence (§2.14)
            raise err
        headers = {"X-Repo-Commit": oid, "Accept-Ranges": "bytes", "ETag": f'"{entry.git_sha1}"'}
        if entry.lfs:
            headers.update(
                {"ETag": f'"{entry.sha256}"', "X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)}
            )
        start, end = 0, entry.size
        status = 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            parsed = _parse_range(range_header, entry.size)
            if parsed is None:
                err = HubError(416, f"Unsatisfiable range {range_header!r}")
                err.headers["Content-Range"] = f"bytes */{entry.size}"
                raise err
            start, end = parsed
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{entry.size}"
        body = storage.iter_blob(entry.sha256, start, end) if self.command == "GET" else iter(())
        self._send(status, body, content_type="application/octet-stream", headers=headers, length=end - start)


def _commit_operation(storage: Storage, key: str, value: dict[str, Any]) -> Operation:
    """One NDJSON line of a commit as an operation; regular file content is stored right away."""
    if key == "file":
        content = value.get("content", "")
        data = base64.b64decode(content, validate=True) if value.get("encoding") == "base64" else content.encode()
        return ("put", value["path"], storage.put_regular(data))
    if key == "lfsFile":
        if value.get("algo", "sha256") != "sha256":
            raise HubError(400, "Only sha256 LFS objects are supported")
        return ("put", value["path"], storage.lfs_entry(value["oid"], value.get("size")))
    if key == "deletedFile":
        return ("delete_file", value["path"], None)
    if key == "deletedFolder":
        return ("delete_folder", value["path"], None)
    raise HubError(400, f"Unknown commit line key {key!r}")


def _error_headers(err: HubError) -> dict[str, str]:
    headers = dict(err.headers)
    if err.code:
        headers["X-Error-Code"] = err.code
    return headers


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` as a half-open [start, end); None if unsatisfiable."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first:
            start, end = int(first), (int(last) + 1 if last else size)
        else:
            start, end = max(size - int(last), 0), size
    except ValueError:
        return None
    end = min(end, size)
    return (start, end) if 0 <= start < end else None


class HubEmulator:
    """A Hub-compatible server on a local port, run in a daemon thread.

    ``tokens`` maps a token to ``(user name, role)`` with role ``"write"`` or ``"read"``::

        with HubEmulator(root=Path("hub-data"), tokens={"hf_write": ("alice", "write")}) as hub:
            HfApi(endpoint=hub.url, token="hf_write").create_repo("alice/model")
    """

    def __init__(
        self,
        root: Path | str,
        tokens: Mapping[str, tuple[str, str]],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        verbose: bool = False,
    ) -> None:
        for user, role in tokens.values():
            if role not in ("read", "write") or not valid_name(user):
                raise ValueError(f"Invalid token owner {user!r} or role {role!r} (expected 'read' or 'write')")
        self.root = Path(root)
        self.host = host
        self.port = port
        self.verbose = verbose
        self._tokens = {token: User(user, role) for token, (user, role) in tokens.items()}
        self._server: HubServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def faults(self) -> FaultRegistry:
        """Faults to inject into the next matching requests (see ``faults.py``)."""
        return self._running().faults

    @property
    def requests(self) -> list[RequestRecord]:
        """Requests served so far (method, path without query, status), oldest first."""
        return list(self._running().requests)

    @property
    def storage(self) -> Storage:
        """The on-disk state (repos, commits, blobs) the server is using."""
        return self._running().storage

    def _running(self) -> HubServer:
        if self._server is None:
            raise RuntimeError("The Hub emulator is not started")
        return self._server

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("The Hub emulator is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> HubEmulator:
        """Bind the port (an ephemeral one if 0) and serve in a daemon thread."""
        if self._server is not None:
            return self
        storage = Storage(self.root)
        self._server = HubServer((self.host, self.port), storage, self._tokens, verbose=self.verbose)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="hub-emulator", daemon=True
        )
        self._thread.start()
        return self

    def wait(self, poll_s: float = 0.5) -> None:
        """Block until the server thread ends (Ctrl-C interrupts it)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(poll_s)

    def stop(self) -> None:
        """Stop serving, close kept-alive connections and release the port."""
        if self._server is None:
            return
        self._server.faults.clear()  # release requests held by delay faults
        self._server.shutdown()
        self._server.close_connections()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> HubEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
