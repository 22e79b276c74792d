"""After the commit: tag it, gate or hide the repo, add it to a collection. Each step is idempotent.

    >>> ensure_tag(api, repo_id, "pruned/v1", commit)            # names may contain '/'
    >>> ensure_settings(api, repo_id, gated="manual", private=True)
    >>> slug = ensure_in_collection(api, repo_id, "Pruned models (ICML 2026)")   # a title or a slug
"""

from __future__ import annotations

import re

from huggingface_hub import HfApi

from ..errors import PublishError
from ..results import SourceRecord
from .retry import DEFAULT_POLICY, RetryPolicy, with_retries

GATED_MODES = ("auto", "manual")
_SLUG = re.compile(r"^[^/\s]+/[^/\s]+-[0-9a-f]{24}$")


def ensure_tag(api: HfApi, repo_id: str, tag: str, commit: str, *, force: bool = False,
               message: str | None = None, policy: RetryPolicy = DEFAULT_POLICY) -> bool:
    """Point tag `tag` at `commit`; False if it already did. An existing tag elsewhere needs `force`."""
    refs = with_retries(lambda: api.list_repo_refs(repo_id), what="listing tags", policy=policy)
    current = next((t.target_commit for t in refs.tags if t.name == tag), None)
    if current == commit:
        return False
    if current is not None:
        if not force:
            raise PublishError(f"tag {tag!r} of {repo_id} already points to {current[:12]}, not {commit[:12]}; "
                               "pass --force to move it")
        with_retries(lambda: api.delete_tag(repo_id, tag=tag), what="moving the tag", policy=policy)
    with_retries(lambda: api.create_tag(repo_id, tag=tag, revision=commit, tag_message=message, exist_ok=True),
                 what="creating the tag", policy=policy)
    refs = with_retries(lambda: api.list_repo_refs(repo_id), what="listing tags", policy=policy)
    if next((t.target_commit for t in refs.tags if t.name == tag), None) != commit:  # a concurrent tagger won
        raise PublishError(f"tag {tag!r} of {repo_id} was created elsewhere while publishing; check the repo")
    return True


def inherited_gate(asked: str | None, source: SourceRecord) -> tuple[str | None, str | None]:
    """The gate to push with, and a warning when it comes from the base repo rather than --gated (or when the
    base card asks for terms but no Hub gate is known, e.g. for a local copy).

        >>> inherited_gate(None, source)      # source.gated == "manual"
        ('manual', 'the base model org/m is gated (manual) on the Hub: ...')

    Gated bases (Llama, Gemma) make users accept terms that redistributors must pass on: without --gated,
    the pruned repo asks for the same acceptance, in the same mode.
    """
    base = source.base_model_id or source.reference
    if asked is not None:
        return asked, None
    if source.gated in GATED_MODES:
        return source.gated, (f"the base model {base} is gated ({source.gated}) on the Hub: the pruned repo is gated "
                              "the same way (--gated auto|manual chooses the mode)")
    if source.gating:  # e.g. a local copy of a gated model: its card asks for terms the Hub gate would enforce
        return None, (f"the card of {base} asks users to accept terms (extra_gated_*), but no Hub gate was found; "
                      "pass --gated manual (or auto) to gate the pruned repo")
    return None, None


def ensure_settings(api: HfApi, repo_id: str, *, gated: str | None = None, private: bool = False,
                    policy: RetryPolicy = DEFAULT_POLICY) -> list[str]:
    """Gate the repo (`auto`/`manual`) and/or make it private when it is not yet; never makes it public.

    Returns what changed, e.g. ``["gated=manual"]``.
    """
    if gated is not None and gated not in GATED_MODES:
        raise PublishError(f"gated must be one of {', '.join(GATED_MODES)}, got {gated!r}")
    info = with_retries(lambda: api.model_info(repo_id), what="reading the repo settings", policy=policy)
    changes: dict[str, object] = {}
    if gated is not None and info.gated != gated:
        changes["gated"] = gated
    if private and not info.private:
        changes["private"] = True
    if changes:
        with_retries(lambda: api.update_repo_settings(repo_id, **changes), what="updating the repo settings",
                     policy=policy)
    return [f"{key}={value}" for key, value in changes.items()]


def ensure_in_collection(api: HfApi, repo_id: str, collection: str, *, policy: RetryPolicy = DEFAULT_POLICY) -> str:
    """Add the model to a collection, once; a title that names no collection of the repo's owner creates one.

    `collection` is a slug (``owner/title-<24 hex>``) or a title. Returns the collection's slug.
    """
    owner = repo_id.split("/")[0]
    if _SLUG.match(collection):
        slug = collection
    else:
        found = with_retries(lambda: [c for c in api.list_collections(owner=owner) if c.title == collection],
                             what="listing collections", policy=policy)
        if found:
            slug = found[0].slug
        else:
            created = with_retries(lambda: api.create_collection(collection, namespace=owner, exists_ok=True),
                                   what="creating the collection", policy=policy)
            slug = created.slug
    current = with_retries(lambda: api.get_collection(slug), what="reading the collection", policy=policy)
    if any(item.item_type == "model" and item.item_id == repo_id for item in current.items):
        return slug
    with_retries(lambda: api.add_collection_item(slug, item_id=repo_id, item_type="model", exists_ok=True),
                 what="adding to the collection", policy=policy)
    return slug
