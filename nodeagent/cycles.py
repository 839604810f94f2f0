"""Free what failed requests leave behind, soon after they fail.

A failed attempt leaves reference cycles: urllib3 keeps each attempt's exception in a local of a
frame the exception passed through, the retry loop's callbacks hold the last failure, and an
exception's traceback holds its frames. With them stay the attempt's socket, its TLS object
and its connection. CPython frees a cycle only when its collector runs over the generation the
cycle has reached. These live through the young collections that run while the request is
retried, so they wait for a full collection, which a quiet daemon seldom reaches; meanwhile the
memory they hold is not reused, and each outage of the API server or IMDS leaves the daemon's
C heap larger.

So each client (the Kubernetes API's, IMDS's) reports its failed attempts, and its next request
first runs a full collection (about 6 ms for the daemon's objects), at most once per
`min_interval_s`: during a long outage that is at most 0.6 % of a core, and the first request
after it frees what the last failures left.

Between failures, the poll loop runs a full collection once a minute (`PeriodicCollection`). A
quiet daemon's own full collections are far apart: CPython runs one only when the objects that
reached the oldest generation since the last are a quarter of those already there, and the
daemon's modules alone are some 30 thousand. Until one runs, the interpreter's free lists
(tuples, lists, dicts, floats) keep their blocks, spread over pymalloc's pools, which then stay
in use; with a notice every 3 s the RSS grew about half as fast with one a minute. At its first
tick it freezes what startup made (`gc.freeze`: the modules, the clients, the settings), which no
collection then walks: each one takes about 0.1 ms instead of 5-8 ms.
"""

from __future__ import annotations

import gc
import threading
from typing import Callable

MIN_INTERVAL_S = 1.0
PERIODIC_INTERVAL_S = 60.0


class CycleCollector:
    def __init__(
        self,
        monotonic: Callable[[], float],
        collect: Callable[[], int] = gc.collect,
        min_interval_s: float = MIN_INTERVAL_S,
    ):
        self._monotonic = monotonic
        self._collect = collect
        self._min_interval_s = min_interval_s
        self._lock = threading.Lock()
        self._owed = False
        self._last: float | None = None

    def failed(self) -> None:
        """An attempt failed (or was retried): it left cycles behind."""
        with self._lock:
            self._owed = True

    def before_request(self) -> None:
        """Collect now if a failure is owed and the last collection is old enough."""
        with self._lock:
            if not self._owed:  # nearly every request: no clock read
                return
            now = self._monotonic()
            if self._last is not None and now - self._last < self._min_interval_s:
                return
            self._owed = False
            self._last = now
        self._collect()


class PeriodicCollection:
    """A full collection every `every_s` after the first tick, which collects and freezes what
    is there."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        collect: Callable[[], int] = gc.collect,
        every_s: float = PERIODIC_INTERVAL_S,
        freeze: Callable[[], None] = gc.freeze,
    ):
        self._monotonic = monotonic
        self._collect = collect
        self._every_s = every_s
        self._freeze = freeze
        self._next_at: float | None = None

    def tick(self) -> None:
        """Called by the loop after each poll; collects when one is due."""
        now = self._monotonic()
        if self._next_at is None:
            self._next_at = now + self._every_s
            self._collect()
            self._freeze()
        elif now >= self._next_at:
            self._next_at = now + self._every_s
            self._collect()
