"""The ASG termination lifecycle hook: when to heartbeat it and when to complete it. Pure.

With a termination lifecycle hook, an instance whose target lifecycle state turned `Terminated`
waits in `Terminating:Wait` until someone calls CompleteLifecycleAction or the hook's heartbeat
timeout runs out. The agent completes the action itself once the node's response is over, and
keeps the hold alive with RecordLifecycleActionHeartbeat while a drain runs long, never past the
cap the user set. nodeagent/lifecycle_hook.py makes the calls; docs/asg-lifecycle.md says it in
prose; tests/unit/test_lifecycle.py holds the cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from nodeagent.clock import parse_optional_iso
from nodeagent.notices import ASG_TERMINATED, NoticeKind
from nodeagent.state import OPEN_PHASES, NoticeRecord

# Auto Scaling's own limit on one hold: 100 heartbeat timeouts or 48 hours, whichever is less.
AWS_MAX_HOLD_S = 48 * 3600.0
AWS_MAX_TIMEOUTS = 100
HEARTBEAT_JITTER_SHARE = 0.1  # a heartbeat comes up to this share of its gap early, at random


@dataclass(frozen=True)
class HookPolicy:
    heartbeat_timeout_s: float  # the hook's HeartbeatTimeout
    share: float  # heartbeat once this share of the timeout has passed since the last one
    max_hold_s: float  # ASG_HEARTBEAT_MAX: no heartbeat may keep the instance past this

    @property
    def cap_s(self) -> float:
        return min(self.max_hold_s, AWS_MAX_HOLD_S, AWS_MAX_TIMEOUTS * self.heartbeat_timeout_s)

    @classmethod
    def from_settings(cls, settings) -> HookPolicy:
        return cls(settings.asg_heartbeat_timeout, settings.asg_heartbeat_share, settings.asg_heartbeat_max)


def hooked(record: NoticeRecord) -> bool:
    """Only a termination waits on a termination hook (warm-pool states have hooks of their own kind)."""
    return record.kind == NoticeKind.ASG.value and record.action == ASG_TERMINATED


def settled(record: NoticeRecord) -> bool:
    """Nothing more is to be said to Auto Scaling for this record."""
    return record.lifecycle_completed_at is not None or bool(record.lifecycle_outcome)


def held_since(record: NoticeRecord) -> datetime | None:
    """When the hold began: the first sight of the Terminated state (the wait starts with it)."""
    return parse_optional_iso(record.first_seen)


def next_heartbeat(record: NoticeRecord, policy: HookPolicy, early_s: float = 0.0) -> datetime | None:
    """When the next heartbeat is due; None when the cap forbids another one.

    A heartbeat at moment t keeps the instance until t + timeout, so one is allowed only while
    t + timeout stays within the cap counted from the start of the hold. `early_s` moves the
    first one that much earlier (never later: a late heartbeat lets the hold run out), and with it
    the phase of every later one; the hook gives each notice its own random share
    (HEARTBEAT_JITTER_SHARE), so instances terminated together do not call Auto Scaling together."""
    start = held_since(record)
    if start is None:
        return None
    gap_s = policy.share * policy.heartbeat_timeout_s
    last = parse_optional_iso(record.lifecycle_heartbeat_at)
    if last is None:
        due = start + timedelta(seconds=gap_s - min(max(0.0, early_s), gap_s * HEARTBEAT_JITTER_SHARE))
    else:
        due = last + timedelta(seconds=gap_s)
    if (due - start).total_seconds() + policy.heartbeat_timeout_s > policy.cap_s:
        return None
    return due


def heartbeat_due(
    records: Mapping[str, NoticeRecord],
    policy: HookPolicy,
    now: datetime,
    early_s: Mapping[str, float] | None = None,
) -> list[str]:
    """Hooked notices whose response is still open and whose heartbeat time has come."""
    due = []
    for record in records.values():
        if not hooked(record) or settled(record) or record.phase not in OPEN_PHASES:
            continue
        at = next_heartbeat(record, policy, (early_s or {}).get(record.id, 0.0))
        if at is not None and at <= now:
            due.append(record.id)
    return due


def completion_due(records: Mapping[str, NoticeRecord]) -> list[str]:
    """Hooked notices whose lifecycle action is to be completed now: the record is closed (done,
    expired, skipped, superseded) and no notice on this node still has a response open, so the
    node is empty or as empty as it will get (a superseding spot drain runs to its end first)."""
    if any(record.phase in OPEN_PHASES for record in records.values()):
        return []
    return [record.id for record in records.values() if hooked(record) and not settled(record)]


def wake_at(
    records: Mapping[str, NoticeRecord], policy: HookPolicy, early_s: Mapping[str, float] | None = None
) -> datetime | None:
    """The earliest heartbeat still to come (None: nothing scheduled), so the caller sleeps until then."""
    times = [
        next_heartbeat(record, policy, (early_s or {}).get(record.id, 0.0))
        for record in records.values()
        if hooked(record) and not settled(record) and record.phase in OPEN_PHASES
    ]
    present = [moment for moment in times if moment is not None]
    return min(present) if present else None


def held_seconds(record: NoticeRecord) -> float | None:
    """How long the hook held the instance: from the first sight of Terminated to the completion."""
    start, end = held_since(record), parse_optional_iso(record.lifecycle_completed_at)
    if start is None or end is None:
        return None
    return max(0.0, (end - start).total_seconds())
