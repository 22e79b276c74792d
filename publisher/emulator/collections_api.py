"""Collections in the Hub emulator: storage and the HTTP routes the client's collections API calls.

Routes (``hf_api.py`` 2.4.0: ``create_collection``, ``list_collections``, ``get_collection``,
``delete_collection``, ``add_collection_item``, ``delete_collection_item``)::

    POST   /api/collections                         {"title","namespace","private","description"?} -> collection
                                                    409 {"slug"} when the owner has one with that title
    GET    /api/collections?owner=&item=&limit=     list, without "position" (the client adds it), <= 4 items each
    GET    /api/collections/{ns}/{slug}             collection (with "position")
    DELETE /api/collections/{ns}/{slug}
    POST   /api/collections/{ns}/{slug}/items       {"item": {"id","type"}, "note"?} -> collection; 409 if present
    DELETE /api/collections/{ns}/{slug}/items/{item_object_id}

Stored as ``collections/<ns>/<slug>.json`` under the emulator root.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from pathlib import Path
from typing import Any

from .storage import HubError, RepoId, Storage, _write_json_atomic, now_iso, valid_name

_REPO_ITEM_TYPES = {"model", "dataset", "space"}
_ITEM_TYPES = _REPO_ITEM_TYPES | {"paper", "collection", "bucket"}
_SLUG_PART = re.compile(r"^[a-z0-9][a-z0-9-]*-[0-9a-f]{24}$")
LIST_ITEMS = 4  # the Hub truncates items when listing collections


def _slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:60] or "collection"


def collection_not_found(slug: str) -> HubError:
    return HubError(404, f"Collection not found: {slug}")


class CollectionStore:
    """Collections on disk; safe to share between server threads."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.root = storage.root / "collections"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def _path(self, slug: str) -> Path:
        namespace, _, part = slug.partition("/")
        if not valid_name(namespace) or not _SLUG_PART.match(part):
            raise collection_not_found(slug)
        return self.root / namespace / f"{part}.json"

    def get(self, slug: str) -> dict[str, Any]:
        try:
            return json.loads(self._path(slug).read_text())
        except FileNotFoundError:
            raise collection_not_found(slug) from None

    def all(self) -> list[dict[str, Any]]:
        items = [json.loads(p.read_text()) for p in self.root.glob("*/*.json")]
        return sorted(items, key=lambda c: c["created"])

    def create(self, namespace: str, title: str, *, private: bool, description: str | None) -> dict[str, Any]:
        """A new collection; HubError 409 (with the existing slug) if the owner has one with this title."""
        with self._lock:
            for existing in self.all():
                if existing["namespace"] == namespace and existing["title"] == title:
                    raise HubError(409, f"You already have a collection named {title!r}", slug=existing["slug"])
            slug = f"{namespace}/{_slugify(title)}-{secrets.token_hex(12)}"
            now = now_iso()
            data = {"slug": slug, "title": title, "namespace": namespace, "private": private,
                    "description": description, "items": [], "created": now, "lastUpdated": now}
            path = self._path(slug)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(path, data)
            return data

    def delete(self, slug: str) -> None:
        with self._lock:
            path = self._path(slug)
            if not path.exists():
                raise collection_not_found(slug)
            path.unlink()

    def add_item(self, slug: str, item_id: str, item_type: str, note: str | None) -> dict[str, Any]:
        """Append an item; HubError 409 if it is already there, 404 if its repo does not exist."""
        if item_type not in _ITEM_TYPES:
            raise HubError(400, f"Invalid item type {item_type!r}")
        if item_type in _REPO_ITEM_TYPES:
            namespace, _, name = item_id.partition("/")
            repo = RepoId(item_type, namespace, name)
            if not (valid_name(namespace) and valid_name(name)) or self.storage.repo_meta(repo) is None:
                raise HubError(404, f"{item_type} {item_id} not found", "RepoNotFound")
        with self._lock:
            data = self.get(slug)
            if any(i["id"] == item_id and i["type"] == item_type for i in data["items"]):
                raise HubError(409, f"{item_type} {item_id} is already in the collection {slug}")
            item: dict[str, Any] = {"_id": secrets.token_hex(12), "id": item_id, "type": item_type,
                                    "position": len(data["items"])}
            if note:
                item["note"] = {"text": note, "html": note}
            data["items"].append(item)
            data["lastUpdated"] = now_iso()
            _write_json_atomic(self._path(slug), data)
            return data

    def delete_item(self, slug: str, object_id: str) -> None:
        with self._lock:
            data = self.get(slug)
            kept = [i for i in data["items"] if i["_id"] != object_id]
            if len(kept) == len(data["items"]):
                raise HubError(404, f"Item {object_id} not found in {slug}")
            data["items"] = [dict(i, position=n) for n, i in enumerate(kept)]
            data["lastUpdated"] = now_iso()
            _write_json_atomic(self._path(slug), data)


def collection_json(data: dict[str, Any], *, position: int | None, max_items: int | None = None) -> dict[str, Any]:
    """A collection as the client parses it (``hf_api.Collection``); ``position`` None for listings."""
    items = data["items"] if max_items is None else data["items"][:max_items]
    out = {
        "slug": data["slug"],
        "title": data["title"],
        "description": data.get("description"),
        "owner": {"name": data["namespace"], "type": "user"},
        "items": items,
        "lastUpdated": data["lastUpdated"],
        "private": data["private"],
        "theme": "indigo",
        "upvotes": 0,
        "isUpvotedByUser": False,
    }
    if position is not None:
        out["position"] = position
    return out


class CollectionRoutes:
    """Mixin for the request handler: ``/api/collections...``. Needs the handler's auth and body helpers."""

    server: Any
    command: str

    def _route_collections(self, rest: list[str]) -> Any:
        method, store = self.command, self.server.collections
        if not rest:
            if method == "POST":
                return self._create_collection
            if method == "GET":
                return self._list_collections
        elif len(rest) >= 2:
            slug = f"{rest[0]}/{rest[1]}"
            tail = rest[2:]
            if not tail and method == "GET":
                return lambda: self._get_collection(slug)
            if not tail and method == "DELETE":
                return lambda: self._owner_op(slug, lambda: store.delete(slug))
            if tail == ["items"] and method == "POST":
                return lambda: self._add_collection_item(slug)
            if len(tail) == 2 and tail[0] == "items" and method == "DELETE":
                return lambda: self._owner_op(slug, lambda: store.delete_item(slug, tail[1]))
        raise HubError(404, f"No route for {method} /api/collections/{'/'.join(rest)}")

    def _visible(self, data: dict[str, Any]) -> bool:
        user = self._user()
        return not data["private"] or (user is not None and user.name == data["namespace"])

    def _position(self, data: dict[str, Any]) -> int:
        mine = [c["slug"] for c in self.server.collections.all() if c["namespace"] == data["namespace"]]
        return mine.index(data["slug"]) if data["slug"] in mine else 0

    def _create_collection(self) -> None:
        body = self._read_json()
        user = self._writer()
        namespace = body.get("namespace") or user.name
        self._writer(namespace)
        title = body.get("title")
        if not isinstance(title, str) or not title.strip():
            raise HubError(400, "A collection needs a 'title'")
        data = self.server.collections.create(namespace, title, private=bool(body.get("private")),
                                              description=body.get("description"))
        self._send_json(collection_json(data, position=self._position(data)))

    def _list_collections(self) -> None:
        query = self.query
        owners, wanted = query.get("owner") or [], query.get("item") or []
        found = []
        for data in self.server.collections.all():
            if not self._visible(data) or (owners and data["namespace"] not in owners):
                continue
            keys = {f"{i['type']}s/{i['id']}" for i in data["items"]}
            if wanted and not keys.intersection(wanted):
                continue
            found.append(collection_json(data, position=None, max_items=LIST_ITEMS))
        limit = query.get("limit")
        if limit and limit[0].isdigit():
            found = found[: int(limit[0])]
        self._send_json(found)

    def _get_collection(self, slug: str) -> None:
        data = self.server.collections.get(slug)
        if not self._visible(data):
            raise collection_not_found(slug)
        self._send_json(collection_json(data, position=self._position(data)))

    def _owner_op(self, slug: str, operation: Any) -> None:
        self._discard_body()
        data = self.server.collections.get(slug)
        if not self._visible(data):
            raise collection_not_found(slug)
        self._writer(data["namespace"])
        operation()
        self._send_json({})

    def _add_collection_item(self, slug: str) -> None:
        body = self._read_json()
        data = self.server.collections.get(slug)
        if not self._visible(data):
            raise collection_not_found(slug)
        self._writer(data["namespace"])
        item = body.get("item") or {}
        if not isinstance(item.get("id"), str) or not isinstance(item.get("type"), str):
            raise HubError(400, "The body needs 'item': {'id': ..., 'type': ...}")
        note = body.get("note") if isinstance(body.get("note"), str) else None
        data = self.server.collections.add_item(slug, item["id"], item["type"], note)
        self._send_json(collection_json(data, position=self._position(data)))
