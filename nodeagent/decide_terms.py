"""The decision core's terms: what the core is told and what it answers (decide.py has the rules).

Told: a poll's result (PollResult), what the agent knows besides (Context), the notice the node's
own labels name (NodeNotice), and what the worker and the lifecycle hook report (Report). Answered:
the actions on the records (Action, in a Decision) and the jobs for the worker (Plan, UncordonJob).
Frozen dataclasses only: no rules, no I/O.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Union

from nodeagent.notices import Notice, NoticeKind
from nodeagent.state import NoticeRecord


@dataclass(frozen=True)
class Plan:
    """What the worker must do for one notice. Everything downstream works from `deadline`."""

    notice_id: str
    kind: NoticeKind
    action: str
    response: str  # drain | cordon
    deadline: datetime
    force_at_deadline: bool
    exclude_from_lb: bool  # a drain only (decided here, not by the responder)
    dry_run: bool
    resume: bool = False


@dataclass(frozen=True)
class UncordonJob:
    """Lift the cordon and our labels for a notice (the worker runs it; nothing else holds the node)."""

    notice_id: str
    reason: str


Job = Union[Plan, UncordonJob]


@dataclass(frozen=True)
class PollResult:
    notices: Mapping[str, Notice]
    # Kinds whose path answered this poll. A notice missing from a kind that did not answer is
    # not "gone": only a real answer counts towards a withdrawal.
    answered: frozenset[str]
    errors: Mapping[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()  # entries skipped inside answered bodies


@dataclass(frozen=True)
class Absence:
    """A withdrawable notice missing from IMDS: since when, and for how many answered polls."""

    since: datetime
    polls: int


@dataclass(frozen=True)
class Context:
    """What the agent knows besides the records and the poll."""

    now: datetime
    running: str | None = None  # the notice whose response the worker is carrying out
    spot_label: bool | None = None  # lifecycle=Ec2Spot on the Node (None: not known yet)
    imds_life_cycle: str | None = None  # IMDS instance-life-cycle
    boot_time: float = 0.0  # wall-clock seconds
    # Uncordons the worker could not carry out, not yet tried again (by notice id).
    failed_uncordons: Mapping[str, UncordonFailed] = field(default_factory=dict)


# --- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accept:
    record: NoticeRecord
    notice: Notice
    plan: Plan | None  # None when the response is ignore or gated
    message: str


@dataclass(frozen=True)
class Supersede:
    notice_id: str
    by: str


@dataclass(frozen=True)
class Cancel:
    notice_id: str
    reason: str
    undo: bool  # uncordon: the response had touched the node and no other notice holds it


@dataclass(frozen=True)
class Uncordon:
    """Lift the cordon of a finished response (the event happened), unless `keep` says another
    notice (`held_by`) holds the node; then only the record is released."""

    notice_id: str
    reason: str
    keep: bool
    held_by: str = field(default="", compare=False)


@dataclass(frozen=True)
class Resume:
    plan: Plan


@dataclass(frozen=True)
class Reopen:
    """A response superseded by a notice that was then cancelled: it is the node's again."""

    plan: Plan


@dataclass(frozen=True)
class Expire:
    notice_id: str
    reason: str  # the record's outcome
    message: str = field(default="", compare=False)  # the log line


@dataclass(frozen=True)
class Close:
    """A response ran to its end: its progress and outcome go on the record, which is done."""

    notice_id: str
    progress: NoticeRecord
    handled_at: float  # wall-clock seconds


@dataclass(frozen=True)
class StopEarly:
    """A cancelled or superseded response has stopped: how far it got goes on the record."""

    notice_id: str
    progress: NoticeRecord


@dataclass(frozen=True)
class KeepOpen:
    """The agent stopped mid-response: progress kept, the record stays open for the next start."""

    progress: NoticeRecord


@dataclass(frozen=True)
class Forget:
    """Drop closed records that nothing needs any more (decide.forgettable)."""

    notice_ids: tuple[str, ...]


@dataclass(frozen=True)
class Say:
    """A log line, said once per key while its text is unchanged."""

    key: str
    text: str
    level: int = logging.INFO


Action = Union[
    Accept, Supersede, Cancel, Uncordon, Resume, Reopen, Expire, Close, StopEarly, KeepOpen, Forget, Say
]


# --- what the worker and the lifecycle hook report to the poll loop ----------------------------


class Ending(str, enum.Enum):
    """How a response ended, as the worker saw it."""

    FINISHED = "finished"  # on its own: done, failed, or at its deadline
    STOPPED = "stopped"  # its cancel token was set (the notice was cancelled or superseded)
    INTERRUPTED = "interrupted"  # the agent is stopping
    LATE = "late"  # not started: the deadline passed before Kubernetes was ready
    DROPPED = "dropped"  # not started: cancelled or superseded while it waited


@dataclass(frozen=True)
class KubernetesReady:
    """The worker brought the Kubernetes side up. What it found on the node, for the loop's own
    use (the worker's thread goes on changing the responder's view of the node)."""

    spot_label: bool | None  # lifecycle=Ec2Spot on the Node (None: not known)


@dataclass(frozen=True)
class ResponseStarted:
    notice_id: str


@dataclass(frozen=True)
class ResponseEnded:
    """Why a response ended and what it did (`progress`: its working copy; None when it never
    started). Every plan handed to the worker ends in exactly one of these."""

    notice_id: str
    ending: Ending
    progress: NoticeRecord | None
    at: float  # wall-clock seconds


@dataclass(frozen=True)
class UncordonDone:
    notice_id: str
    reason: str


@dataclass(frozen=True)
class UncordonFailed:
    """The worker could not lift the cordon (the API did not answer): the record stays pending."""

    notice_id: str
    reason: str  # why the uncordon was decided, kept for the next attempt
    at: datetime


@dataclass(frozen=True)
class LifecycleTold:
    """Auto Scaling accepted a lifecycle call: the lifecycle_* fields to record."""

    notice_id: str
    fields: Mapping[str, object]


Report = Union[KubernetesReady, ResponseStarted, ResponseEnded, UncordonDone, UncordonFailed, LifecycleTold]


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...]
    absences: Mapping[str, Absence]


# --- a lost state file -----------------------------------------------------------------------


@dataclass(frozen=True)
class NodeNotice:
    """The notice the node's own labels and annotations name (written with the cordon)."""

    id: str
    kind: str
    deadline: str
    action: str
    agent: str  # our presence label: draining, drained, cordoning, cordoned, ...
    cordoned: bool
