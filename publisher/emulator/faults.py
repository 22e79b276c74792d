"""Fault injection for the Hub emulator: make chosen requests fail the way networks and servers do.

Faults match requests by a regular expression searched in the raw URL path (no query string) and,
optionally, the HTTP method. Each fires for the next ``times`` matching requests, then is spent::

    with HubEmulator(root=tmp, tokens=tokens) as hub:
        hub.faults.add(r"/lfs-upload/", kind="drop", after_bytes=1 << 20)   # hang up mid-upload
        hub.faults.add(r"/commit/", kind="status", status=500, times=2)      # two 500s, then normal
        hub.faults.add(r"/preupload/", kind="status", status=429)            # rate limited, Retry-After: 0
        held = hub.faults.add(r"/commit/", kind="delay", delay_s=10)          # hold the request...
        held.wait_fired(5); held.release()                                    # ...until released
        hub.faults.add(r"/commit/", kind="lose_response")                    # applied, answer never arrives
        hub.faults.clear()

Kinds:

* ``status``: the body is read and discarded, then ``status`` is answered with a JSON error
  (and ``Retry-After: <retry_after>`` unless ``retry_after`` is None). Nothing is processed.
* ``drop``: ``after_bytes`` bytes of the body are read, then the connection is closed without an answer.
  Nothing is processed.
* ``delay``: the request waits ``delay_s`` seconds (or until ``release()``), then is processed normally.
* ``lose_response``: the request is processed normally (a commit is applied), but the connection is
  closed instead of sending the answer: the client cannot tell whether it worked.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

KINDS = ("status", "drop", "delay", "lose_response")


@dataclass
class Fault:
    """One injected fault; ``fired`` counts the requests it hit so far."""

    pattern: re.Pattern[str]
    kind: str
    method: str | None = None
    status: int = 500
    after_bytes: int = 0
    times: int = 1
    delay_s: float = 0.0
    retry_after: float | None = 0
    fired: int = 0
    _released: threading.Event = field(default_factory=threading.Event, repr=False)
    _hit: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def spent(self) -> bool:
        return self.fired >= self.times

    def release(self) -> None:
        """End the wait of ``delay`` requests now (held or future ones)."""
        self._released.set()

    def wait_fired(self, timeout_s: float = 10.0) -> bool:
        """Block until the fault has hit at least one request; False on timeout."""
        return self._hit.wait(timeout_s)

    def hold(self) -> None:
        """Called by the server for ``delay`` faults: wait until released or ``delay_s`` passed."""
        self._released.wait(self.delay_s)


class FaultRegistry:
    """The emulator's active faults; thread-safe. ``hub.faults`` is one of these."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(
        self,
        path_regex: str,
        kind: str = "status",
        *,
        method: str | None = None,
        status: int = 500,
        after_bytes: int = 0,
        times: int = 1,
        delay_s: float = 0.0,
        retry_after: float | None = 0,
    ) -> Fault:
        """Register a fault for the next ``times`` requests whose path matches ``path_regex``."""
        if kind not in KINDS:
            raise ValueError(f"Unknown fault kind {kind!r}; expected one of {', '.join(KINDS)}")
        if times < 1 or after_bytes < 0 or delay_s < 0:
            raise ValueError("times must be >= 1, after_bytes and delay_s >= 0")
        fault = Fault(
            re.compile(path_regex),
            kind,
            method=method.upper() if method else None,
            status=status,
            after_bytes=after_bytes,
            times=times,
            delay_s=delay_s,
            retry_after=retry_after,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, method: str, path: str) -> Fault | None:
        """The first unspent fault matching this request, counted as fired; None if there is none."""
        with self._lock:
            for fault in self._faults:
                if fault.spent or (fault.method and fault.method != method) or not fault.pattern.search(path):
                    continue
                fault.fired += 1
                fault._hit.set()
                return fault
        return None

    def clear(self) -> None:
        """Remove every fault and release requests still held by ``delay`` faults."""
        with self._lock:
            faults, self._faults = self._faults, []
        for fault in faults:
            fault.release()

    def __len__(self) -> int:
        with self._lock:
            return sum(not f.spent for f in self._faults)
