"""Retries with backoff for the Hub calls the client does not retry itself.

What `huggingface_hub` 2.4.0 retries on its own (`utils/_http.py:http_backoff`: 408/429/5xx, timeouts and
network errors, 5 retries, 1 → 8 s, honouring `Retry-After`): `preupload`, the LFS batch request, LFS PUTs
(single and multipart) and LFS verify, and the HEAD of `hf_hub_download` when nothing is cached.
What it does NOT retry: `whoami`, `create_repo`, `repo_info`, `validate-yaml`, the commit POST of
`create_commit` (legacy, non-Xet path), trees, refs, branches, tags, settings, collections, discussions.

`with_retries` wraps a whole call. Wrapping `create_commit` is safe because a retry re-uploads nothing
already stored (the LFS batch answers without `actions`) and the commit carries `parentCommit`: a commit whose
answer was lost is rejected with 412 on the retry instead of being applied twice (the caller reconciles).

    >>> info = with_retries(lambda: api.create_commit(...), what="commit", policy=RetryPolicy(attempts=4))
    >>> with http_timeouts(120):          # the client's shared httpx client has no timeout by default
    ...     publish_run(...)

The client's HTTP module is `httpx` under huggingface_hub 1.x and `httpx2` under 2.x; both export it as
`huggingface_hub.utils.httpx`, so that is the only way this code names it (its errors, `Client`, `Timeout`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from huggingface_hub import set_client_factory
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import httpx

log = logging.getLogger(__name__)

T = TypeVar("T")
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError, ConnectionError,
                     TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: `attempts` tries in all, waits `base_s`, 2×, 4× … capped at `max_s`."""

    attempts: int = 4
    base_s: float = 2.0
    max_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based); `Retry-After` wins when given."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_s)
        return min(self.base_s * 2 ** (attempt - 1), self.max_s)


DEFAULT_POLICY = RetryPolicy()


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a Hub error, None for network errors and everything else."""
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None) if isinstance(exc, HfHubHTTPError) else None


def is_transient(exc: BaseException) -> bool:
    """A failure worth retrying: 408/429/5xx, a timeout, a dropped or refused connection."""
    if isinstance(exc, HfHubHTTPError):
        return status_of(exc) in TRANSIENT_STATUS
    return isinstance(exc, _TRANSIENT_ERRORS)


def hub_unavailable(exc: BaseException) -> bool:
    """Whether `exc` is, or was raised on purpose for (`raise ... from` / `from None`), a transient failure: the
    Hub or the network was unavailable, so the command exits with `errors.HUB_UNAVAILABLE`. An exception merely
    raised while handling another one is not counted: that is a failure of its own."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if is_transient(current):
            return True
        seen.add(id(current))
        current = current.__cause__ or (current.__context__ if current.__suppress_context__ else None)
    return False


def describe(exc: BaseException) -> str:
    """A short, secret-free description of a failure (no URLs: upload URLs carry signatures)."""
    status = status_of(exc)
    return f"HTTP {status}" if status is not None else type(exc).__name__


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def with_retries(fn: Callable[[], T], *, what: str, policy: RetryPolicy = DEFAULT_POLICY,
                 before_retry: Callable[[BaseException], T | None] | None = None) -> T:
    """Call `fn`; on a transient failure wait and call it again, up to `policy.attempts` tries in all.

    `before_retry(exc)` runs before each retry; if it returns something other than None, that is returned
    instead of retrying (e.g. it finds the commit whose answer was lost). Other exceptions propagate at once.
    """
    attempt = 1
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or attempt >= policy.attempts:
                raise
            wait = policy.delay(attempt, _retry_after(exc))
            log.warning("%s failed (%s); retry %d/%d in %.1f s", what, describe(exc), attempt,
                        policy.attempts - 1, wait)
            time.sleep(wait)
            if before_retry is not None:
                found = before_retry(exc)
                if found is not None:
                    return found
            attempt += 1


@contextlib.contextmanager
def http_timeouts(seconds: float) -> Iterator[None]:
    """Within the block, every request of `huggingface_hub` times out after `seconds` without progress.

    The client's shared `httpx.Client` has `timeout=None`: a stalled server would hang a push forever.
    Uses the public `set_client_factory`; the default factory is restored afterwards.
    """
    try:
        from huggingface_hub.utils._http import default_client_factory
    except ImportError:  # pragma: no cover - a future client without it
        def default_client_factory() -> httpx.Client:
            return httpx.Client(follow_redirects=True)

    def factory() -> httpx.Client:
        client = default_client_factory()
        client.timeout = httpx.Timeout(seconds)
        return client

    set_client_factory(factory)
    try:
        yield
    finally:
        set_client_factory(default_client_factory)
