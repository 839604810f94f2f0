"""The one gate every request to the API server passes: how many are in flight, how fast they
leave, when the server has asked this node to pause, and which waiting request goes next.

On the day a capacity pool is reclaimed, every node's agent acts in the same second against one
API server. The rules that keep a fleet of agents a good citizen live here:

- **Throttling pauses the node.** A throttling answer (429/503 that is not a PDB refusal, see
  throttle.py) pauses all of this node's requests for the server's `Retry-After` plus jitter, not
  just the one request. Requests already in flight finish; none leaves before the pause ends.
- **Adaptive concurrency.** The in-flight limit starts small and doubles with each round of
  successes until the first throttling answer (slow start), then grows by one per round of
  successes and halves (at most once per pause) on throttling: between 1 and `max_in_flight`
  (DRAIN_PARALLELISM).
- **A rate ceiling.** A token bucket, like the kubelet's own client (API_QPS, API_BURST).
- **Priority.** Waiting requests leave in priority order, then in arrival order: the drain
  (evictions, deletes, its pod list and watch) first, then writes to the Node, then Events.
- **The deadline wins.** A request whose caller's last safe moment has come leaves at once,
  whatever the pause, the limit or the bucket say; the gate reports that it went against the
  server's request so the caller can say so.

`GatePolicy` is the pure part (given `now`, no clock reads, no threads); `ApiGate` wraps it for
threads.
"""

from __future__ import annotations

import enum
import heapq
import itertools
import random
import threading
from dataclasses import dataclass
from typing import Callable

from nodeagent import jitter
from nodeagent.clock import Clock, SystemClock
from nodeagent.kube.throttle import DEFAULT_PAUSE_S

STOP_CHECK_S = 0.5  # a waiter that can be abandoned looks at its stop flag this often


class Priority(enum.IntEnum):
    DRAIN = 0  # evictions, deletes, the drain's pod list and watch
    NODE = 1  # this node's Node object: reads, cordon, labels; startup
    EVENT = 2  # Kubernetes Events


class Answer(enum.Enum):
    OK = "ok"  # any answer that says nothing about the server's load (2xx, 404, 409, a PDB 429)
    THROTTLED = "throttled"  # 429/503 about the server's load
    FAILED = "failed"  # no answer (connection refused, timeout): neither grow nor cut


@dataclass(frozen=True)
class GateLimits:
    max_in_flight: int = 32
    qps: float = 50.0
    burst: int = 100
    initial_in_flight: int = 4

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.qps <= 0 or self.burst < 1:
            raise ValueError(f"bad gate limits: {self}")


class GatePolicy:
    """The gate's state and rules. Pure: every method is given `now` (monotonic seconds)."""

    def __init__(self, limits: GateLimits, rng: random.Random, now: float = 0.0):
        self.limits = limits
        self._rng = rng
        self.limit = float(max(1, min(limits.initial_in_flight, limits.max_in_flight)))
        self.slow_start = True
        self.in_flight = 0
        self.tokens = float(limits.burst)
        self._refilled_at = now
        self.paused_until = 0.0
        self._cut_until = 0.0  # the limit is cut once per pause, not once per throttled answer

    def _refill(self, now: float) -> None:
        if now > self._refilled_at:
            self.tokens = min(
                float(self.limits.burst), self.tokens + (now - self._refilled_at) * self.limits.qps
            )
            self._refilled_at = now

    def wait_s(self, now: float) -> float | None:
        """Seconds until the next request may leave: 0 now, None until a request in flight ends."""
        if now < self.paused_until:
            return self.paused_until - now
        if self.in_flight >= int(self.limit):
            return None
        self._refill(now)
        if self.tokens < 1.0:
            return (1.0 - self.tokens) / self.limits.qps
        return 0.0

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def take(self, now: float) -> None:
        """A request leaves (urgent ones too: they count against the limit and the bucket)."""
        self._refill(now)
        self.tokens -= 1.0
        self.in_flight += 1

    def done(self, now: float, answer: Answer, retry_after_s: float | None = None) -> float:
        """A request's answer came back. Returns the pause it started (0.0 for none)."""
        self.in_flight = max(0, self.in_flight - 1)
        if answer is Answer.OK:
            step = 1.0 if self.slow_start else 1.0 / self.limit
            self.limit = min(float(self.limits.max_in_flight), self.limit + step)
            return 0.0
        if answer is Answer.FAILED:
            return 0.0
        wanted = DEFAULT_PAUSE_S if retry_after_s is None else retry_after_s
        pause = jitter.after(wanted, self._rng)
        if now >= self._cut_until:
            self.limit = max(1.0, self.limit / 2)
            self.slow_start = False
        self.paused_until = max(self.paused_until, now + pause)
        self._cut_until = self.paused_until
        return pause


class GateClosed(Exception):
    """The gate is closing (the agent is stopping): no more requests leave."""


class GateAbandoned(Exception):
    """The caller's stop flag came up while its request waited at the gate."""


@dataclass(frozen=True)
class Ticket:
    """A request's pass through the gate."""

    urgent: bool  # left at its caller's last safe moment, ahead of the gate's rules
    against_pause_s: float  # urgent while the server's pause still had this long to run


class ApiGate:
    """GatePolicy for threads: `enter` blocks until the request may leave; `leave` reports how
    the server answered."""

    def __init__(self, limits: GateLimits, clock: Clock | None = None, rng: random.Random | None = None):
        self.clock: Clock = clock or SystemClock()
        self.policy = GatePolicy(limits, rng or random.Random(), self.clock.monotonic())
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int]] = []  # (priority, arrival): a heap
        self._arrivals = itertools.count()
        self._closed = False
        self.urgent = 0  # requests sent at their last safe moment during a pause

    def enter(
        self,
        priority: Priority,
        act_by: float | None = None,
        give_up: Callable[[], bool] | None = None,
    ) -> Ticket:
        """Wait for this request's turn. `act_by` (monotonic): the caller's last safe moment, when
        it leaves whatever the rules say. `give_up`: asked while waiting; True raises GateAbandoned."""
        with self._cond:
            me = (int(priority), next(self._arrivals))
            heapq.heappush(self._waiting, me)
            try:
                while True:
                    if self._closed:
                        raise GateClosed()
                    if give_up is not None and give_up():
                        raise GateAbandoned()
                    now = self.clock.monotonic()
                    if act_by is not None and now >= act_by:
                        against = max(0.0, self.policy.paused_until - now)
                        if against > 0:
                            self.urgent += 1
                        self.policy.take(now)
                        return Ticket(urgent=True, against_pause_s=against)
                    wait = self.policy.wait_s(now) if self._waiting[0] == me else None
                    if wait == 0.0:
                        self.policy.take(now)
                        return Ticket(urgent=False, against_pause_s=0.0)
                    self._cond.wait(self._timeout(wait, act_by, now, give_up))
            finally:
                self._waiting.remove(me)
                heapq.heapify(self._waiting)
                self._cond.notify_all()

    @staticmethod
    def _timeout(
        wait: float | None, act_by: float | None, now: float, give_up: Callable[[], bool] | None
    ) -> float | None:
        bounds = [b for b in (wait, None if act_by is None else act_by - now) if b is not None]
        if give_up is not None:
            bounds.append(STOP_CHECK_S)
        return max(0.0, min(bounds)) if bounds else None

    def leave(self, answer: Answer, retry_after_s: float | None = None) -> float:
        """The request's answer came back; returns the pause a throttling answer started."""
        with self._cond:
            pause = self.policy.done(self.clock.monotonic(), answer, retry_after_s)
            self._cond.notify_all()
            return pause

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
