"""Per-path IMDS poll pacing: which notice paths are due now, and when the next one is.

Pure: no I/O, no clock reads; `now` and every time are plain monotonic seconds from the caller.

Why each path has its own pace (defaults):
- spot interruption and ASG termination (`POLL_INTERVAL`, 1 s): two minutes of warning for a spot
  interruption, only seconds for an ASG termination without a lifecycle hook. The ASG path can
  have its own (`POLL_INTERVAL_ASG`): with a sub-second `POLL_INTERVAL` kept for spot notices,
  polling it every second makes a third fewer IMDS requests at 250 ms;
- rebalance recommendation (`POLL_INTERVAL_REBALANCE`, 5 s): advisory, it comes well before
  any interruption, and a few seconds later changes nothing;
- scheduled maintenance (`POLL_INTERVAL_SCHEDULED`, 30 s): announced days ahead.
A "hot" path, one whose notice is being responded to, is polled at the fast pace
(`POLL_INTERVAL`) until the response ends, so a cancellation or a change is seen within one
fast interval.

    intervals = path_intervals(fast_s=1.0, rebalance_s=5.0, scheduled_s=30.0)
    plan = plan_polls(now, last_polled, intervals, hot=frozenset(), fast_s=1.0)
    for path in plan.due: ...poll it, record last_polled[path] = `now` (when the poll began)...
    sleep until next_poll_at(time after the poll, last_polled, intervals, hot, fast_s=1.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from nodeagent import notices

# Paths due within this much of each other are polled together: one wake-up, not two, for a
# 1 s and a 5 s path that fall due a few milliseconds apart.
DEFAULT_SLACK_S = 0.005


@dataclass(frozen=True)
class PollPlan:
    """`due`: the paths to poll now, in the order the intervals mapping lists them (when to wake
    next is next_poll_at's answer, once the poll is over)."""

    due: tuple[str, ...]


def path_intervals(
    fast_s: float, rebalance_s: float, scheduled_s: float, asg_s: float | None = None
) -> dict[str, float]:
    """The interval of each notice path, in the agent's polling order (fastest paths first).
    `asg_s` None: the ASG path goes at the fast pace."""
    asg_s = fast_s if asg_s is None else asg_s
    named = (("fast_s", fast_s), ("asg_s", asg_s), ("rebalance_s", rebalance_s), ("scheduled_s", scheduled_s))
    for name, value in named:
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    return {
        notices.SPOT_ACTION_PATH: fast_s,
        notices.ASG_PATH: asg_s,
        notices.REBALANCE_PATH: rebalance_s,
        notices.SCHEDULED_PATH: scheduled_s,
    }


def effective_interval(
    path: str, intervals: Mapping[str, float], hot: AbstractSet[str], fast_s: float
) -> float:
    """A hot path never waits longer than the fast interval; a path's own shorter one still holds."""
    own = intervals[path]
    return min(own, fast_s) if path in hot else own


def plan_polls(
    now: float,
    last_polled: Mapping[str, float | None],
    intervals: Mapping[str, float],
    hot: AbstractSet[str],
    fast_s: float,
    slack_s: float = DEFAULT_SLACK_S,
) -> PollPlan:
    """Which paths of `intervals` are due at `now`.

    A path never polled (absent from `last_polled`, or None) is due at once. A `last_polled`
    time in the future (a clock that went backwards, in a test) counts as just polled. Paths in
    `hot` or `last_polled` that `intervals` does not list are ignored.
    """
    if not intervals:
        raise ValueError("no paths to pace")
    if not fast_s > 0:
        raise ValueError(f"fast_s must be positive, got {fast_s!r}")
    due = []
    for path in intervals:
        every = effective_interval(path, intervals, hot, fast_s)
        last = last_polled.get(path)
        if last is None or now + slack_s >= min(last, now) + every:
            due.append(path)
    return PollPlan(tuple(due))


def next_poll_at(
    now: float,
    last_polled: Mapping[str, float | None],
    intervals: Mapping[str, float],
    hot: AbstractSet[str],
    fast_s: float,
    skipped: AbstractSet[str] = frozenset(),
) -> float:
    """When to wake next, after a poll that ended at `now`: the earliest time a path of
    `intervals` falls due, counted from when it was last polled, so a path that falls due during
    or just after a poll of another one is polled at once, not a whole interval later. A path in
    `skipped` (due, but the poll stopped short of it because IMDS was unreachable) is tried again
    one interval from `now`: an outage never spins the loop."""
    if not intervals:
        raise ValueError("no paths to pace")
    wake = float("inf")
    for path in intervals:
        every = effective_interval(path, intervals, hot, fast_s)
        last = last_polled.get(path)
        waiting = path in skipped or last is None  # not polled yet: a whole interval from now
        wake = min(wake, now + every if waiting else max(now, min(last or 0.0, now) + every))
    return wake
