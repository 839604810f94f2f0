"""The drain's queue of evictions to try: when each pod is tried next, and one probe per
disruption budget. Pure: every method is given `now` (monotonic seconds); no I/O, no threads.

A PodDisruptionBudget lets its pods go one replacement at a time: after each eviction it refuses
the others until the evicted pod's replacement is Ready. Retrying every refused pod of a budget
costs a request per pod per retry and finds the moment no sooner than retrying one of them. So
after a refusal that names its budget (the API server's Status cause "The disruption budget X
needs N healthy pods"), one pod of that budget is the *probe*, retried on the fast schedule; the
others are *parked*. When a pod of the budget goes, the next parked pod is tried at once (the
budget may allow more than one) and becomes the probe. A parked pod is still tried at its own last
safe moment, whatever the probe is doing, so forcing at the deadline works as for any pod. A
refusal that names no budget is paced on its own.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from enum import Enum

from nodeagent.kube.pod_rules import RETRY_BACKOFF_FIRST_S, PodInfo


class Mode(str, Enum):
    EVICT = "evict"
    FORCE = "force"


class Role(Enum):
    ALONE = "alone"  # its refusal named no budget: paced on its own
    PROBE = "probe"  # tried for its budget on the fast schedule
    PARKED = "parked"  # waits for its budget's probe (or its own last safe moment)


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    pod: PodInfo = field(compare=False)
    mode: Mode = field(compare=False)
    backoff: float = field(compare=False)
    version: int = field(compare=False)


@dataclass(frozen=True)
class Due:
    """A pod whose turn has come."""

    pod: PodInfo
    mode: Mode
    backoff: float


class EvictionQueue:
    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._version: dict[str, int] = {}  # pod key -> its live entry's version (older ones are stale)
        self._budget_of: dict[str, str] = {}  # pod key -> the budget that refused it
        self._probe: dict[str, str] = {}  # budget -> the pod key probing it
        self._parked: dict[str, list[PodInfo]] = {}  # budget -> pods waiting for its probe, in order

    def push(
        self, pod: PodInfo, due: float, mode: Mode = Mode.EVICT, backoff: float = RETRY_BACKOFF_FIRST_S
    ) -> None:
        """Try `pod` at `due`; replaces any entry it had."""
        version = self._version.get(pod.key, 0) + 1
        self._version[pod.key] = version
        heapq.heappush(self._heap, _Entry(due, next(self._seq), pod, mode, backoff, version))

    def next_due(self) -> float | None:
        """When the next live entry is due (None: nothing queued)."""
        self._drop_stale()
        return self._heap[0].due if self._heap else None

    def pop_due(self, now: float) -> Due | None:
        """The next pod whose turn has come, or None."""
        self._drop_stale()
        if not self._heap or self._heap[0].due > now:
            return None
        entry = heapq.heappop(self._heap)
        self._version.pop(entry.pod.key, None)
        self._unpark(entry.pod)  # a parked pod tried at its own last safe moment
        return Due(entry.pod, entry.mode, entry.backoff)

    def __bool__(self) -> bool:
        self._drop_stale()
        return bool(self._heap)

    def waiting(self) -> list[PodInfo]:
        """Every pod with a live entry (due later, or parked behind its budget's probe)."""
        return [entry.pod for entry in self._heap if self._version.get(entry.pod.key) == entry.version]

    def role_after_refusal(self, pod: PodInfo, budget: str | None) -> Role:
        """A disruption budget refused `pod`: is it the budget's probe, parked behind it, or alone?"""
        if budget is None:
            return Role.ALONE
        self._budget_of[pod.key] = budget
        probe = self._probe.get(budget)
        if probe is None or probe == pod.key:
            self._probe[budget] = pod.key
            return Role.PROBE
        return Role.PARKED

    def park(self, pod: PodInfo, until: float) -> None:
        """Wait for the budget's probe; tried anyway at `until` (the pod's last safe moment)."""
        budget = self._budget_of[pod.key]
        self._parked.setdefault(budget, []).append(pod)
        self.push(pod, until)

    def went(self, pod: PodInfo, now: float) -> PodInfo | None:
        """`pod` is gone (evicted, forced, or found gone). Its budget let a pod go, so the next
        parked pod of that budget is tried now and probes from here on; it is returned."""
        self._version.pop(pod.key, None)  # any entry left for it is stale
        self._unpark(pod)
        budget = self._budget_of.pop(pod.key, None)
        if budget is None:
            return None
        if self._probe.get(budget) == pod.key:
            del self._probe[budget]
        waiting = self._parked.get(budget)
        if not waiting:
            return None
        successor = waiting.pop(0)
        self._probe[budget] = successor.key
        self.push(successor, now)
        return successor

    def left(self, pod: PodInfo) -> None:
        """`pod` is given up on (blocked, failed, the deadline): its budget's next pod probes."""
        self.went(pod, float("-inf"))

    def _unpark(self, pod: PodInfo) -> None:
        budget = self._budget_of.get(pod.key)
        if budget is not None and pod in self._parked.get(budget, ()):
            self._parked[budget].remove(pod)

    def _drop_stale(self) -> None:
        while self._heap and self._version.get(self._heap[0].pod.key) != self._heap[0].version:
            heapq.heappop(self._heap)
