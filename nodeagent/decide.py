"""The decision core: what a poll, a restart or a boot means for each notice. Pure.

Every function here takes the records (as the store holds them), what IMDS said, the settings
and `now`, and returns actions. Nothing here does I/O, starts a thread, reads a clock or changes
a record: the agent hands the actions to the notice store (record changes) and the worker
(Kubernetes changes). docs/notices.md states the rules in prose; tests/unit/test_decide.py
holds a case for each. The terms it speaks in (Plan, the actions, the reports) are decide_terms.py.

Why one module of this size: it has one job, the rules, and they are not independent: a poll, a
start, an adopted notice and a response's end all decide through the same few judgements
(holds_node, still_needed, plan_for, what an uncordon or an expiry means), so cutting them apart
would only spread one set of rules over several files that each must be read with the others.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from nodeagent import lifecycle
from nodeagent.clock import iso, parse_iso, parse_optional_iso
from nodeagent.config import Settings
from nodeagent.decide_terms import (
    Absence,
    Accept,
    Action,
    Cancel,
    Close,
    Context,
    Decision,
    Ending,
    Expire,
    Forget,
    Job,
    KeepOpen,
    NodeNotice,
    Plan,
    PollResult,
    Reopen,
    ResponseEnded,
    Resume,
    Say,
    StopEarly,
    Supersede,
    Uncordon,
    UncordonJob,
)
from nodeagent.notices import Notice, NoticeKind
from nodeagent.state import (
    ACTING,
    CANCELLED,
    DONE,
    EXPIRED,
    OPEN_PHASES,
    SEEN,
    SKIPPED,
    SUPERSEDED,
    NoticeRecord,
)

SPOT_ONLY_KINDS = (NoticeKind.SPOT_ITN.value, NoticeKind.REBALANCE.value)
# Notices whose instance comes back with the same Node after it: a new boot means it happened.
REBOOT_CODES = ("system-reboot", "instance-reboot")
COMES_BACK_SPOT_ACTIONS = ("stop", "hibernate")
COMES_BACK_ASG_STATES = ("Warmed:Stopped", "Warmed:Hibernated")
# Kinds that IMDS may withdraw (a spot interruption never is; an ASG state change is not a withdrawal).
WITHDRAWABLE_KINDS = (NoticeKind.REBALANCE.value, NoticeKind.SCHEDULED.value)
ACTIVE, COMPLETED = "active", "completed"
ACTING_RESPONSES = ("drain", "cordon")
# Closed records kept once nothing needs them any more: `nodeagent status` and a person reading the
# state file see the recent past; older ones are forgotten, so the file stays small under churn.
KEEP_CLOSED = 20
UNCORDON_RETRY_S = 30.0
# What the core says about one notice, by key prefix (the agent forgets these with the record).
NOTICE_SAY_KEYS = ("note", "back", "over", "vanished", "gone")


# --- rules -----------------------------------------------------------------------------------


def response_for(settings: Settings, kind: str) -> str:
    """The configured response to a notice kind: drain, cordon or ignore."""
    return {
        NoticeKind.SPOT_ITN.value: settings.on_spot_interruption,
        NoticeKind.REBALANCE.value: settings.on_rebalance,
        NoticeKind.SCHEDULED.value: settings.on_scheduled_event,
        NoticeKind.ASG.value: settings.on_asg_termination,
    }[kind]


def force_at_deadline(settings: Settings, kind: str) -> bool:
    """Delete what eviction could not move by the deadline? `auto`: yes, except for a rebalance
    (advice: the instance is not going away at that time)."""
    if settings.force_at_deadline == "auto":
        return kind != NoticeKind.REBALANCE.value
    return settings.force_at_deadline == "true"


def exclude_from_lb(settings: Settings, kind: str, response: str) -> bool:
    """Label the node out of external load balancers? Only for a drain (a cordoned node keeps
    serving); `auto`: only for a spot interruption (the instance is gone in two minutes)."""
    if response != "drain":
        return False
    if settings.exclude_from_lb == "auto":
        return kind == NoticeKind.SPOT_ITN.value
    return settings.exclude_from_lb == "true"


def next_job(jobs: Sequence[Job]) -> int:
    """The index of the job the worker runs next: uncordons first, in the order they came (each
    was decided with the node free of other notices), then the response with the most urgent
    deadline. `jobs` must not be empty."""
    if not jobs:
        raise ValueError("no job to pick")
    for index, job in enumerate(jobs):
        if isinstance(job, UncordonJob):
            return index
    return min(range(len(jobs)), key=lambda index: jobs[index].deadline)  # type: ignore[union-attr]


class StateLoss(str, enum.Enum):
    """How the agent found its state file at start."""

    NONE = "none"
    CORRUPT = "state file lost"  # quarantined: rebuilt from the node's labels
    MISSING = "no state file"  # a first start, or a wiped directory


def holding_notices(loss: StateLoss, startup_failures: int) -> bool:
    """Are notices held (recorded, not acted on) until the node's own labels have been read?
    A corrupt state file holds them until then. A missing one holds them only while the first
    attempt to reach the API is under way: if that fails, notices are recorded and reported, and
    their responses still wait for the node to be read (the worker is held)."""
    if loss == StateLoss.CORRUPT:
        return True
    return loss == StateLoss.MISSING and startup_failures == 0


def hot_kinds(records: Mapping[str, NoticeRecord], loss: StateLoss) -> frozenset[str]:
    """Kinds polled at the fast pace: those with a notice being responded to (a cancel or a
    change is then seen within one fast interval), and all of them while the node has not been
    read for a lost state file (so notices are acted on as soon as it has been)."""
    if loss != StateLoss.NONE:
        return frozenset(kind.value for kind in NoticeKind)
    return frozenset(record.kind for record in records.values() if record.phase in OPEN_PHASES)


def deadline_for(notice: Notice, now: datetime, settings: Settings) -> tuple[datetime, str]:
    """The moment after which nothing is done for this notice, and why it is that moment."""
    window = now + timedelta(seconds=settings.drain_window)
    floor = now + timedelta(seconds=settings.drain_margin)
    if notice.kind in (NoticeKind.REBALANCE, NoticeKind.ASG):
        return window, "DRAIN_WINDOW"
    if notice.kind == NoticeKind.SCHEDULED and notice.deadline <= floor:
        # The maintenance window is open (or opens within the margin): respond at once with
        # each pod's own grace; AWS may act until NotAfter.
        if notice.not_after is not None and notice.not_after > floor:
            return notice.not_after, "window open: NotAfter"
        return window, "window open: first sight + DRAIN_WINDOW"
    if notice.deadline < floor:
        # A hard time (a spot termination) that is already (nearly) past: pods get zero grace.
        return floor, "time already past: now + DRAIN_MARGIN, zero grace"
    return notice.deadline, "the notice's time"


def gate_reason(kind: str, settings: Settings, spot_label: bool | None, life_cycle: str | None) -> str:
    """'' when the spot gate passes (or does not apply), else why not."""
    if kind not in SPOT_ONLY_KINDS or settings.spot_gate == "off":
        return ""
    imds_spot = life_cycle == "spot"
    checks = {
        "label": bool(spot_label),
        "imds": imds_spot,
        "label-or-imds": bool(spot_label) or imds_spot,
        "label-and-imds": bool(spot_label) and imds_spot,
    }
    if checks[settings.spot_gate]:
        return ""
    known = "unknown" if spot_label is None else ("yes" if spot_label else "no")
    return (
        f"SPOT_GATE={settings.spot_gate} says this is not a spot node "
        f"(label lifecycle=Ec2Spot: {known}, IMDS instance-life-cycle: {life_cycle or 'unknown'})"
    )


def plan_for(record: NoticeRecord, settings: Settings, resume: bool = False) -> Plan:
    return Plan(
        notice_id=record.id,
        kind=record.kind,
        action=record.action,
        response=record.response,
        deadline=parse_iso(record.deadline),
        force_at_deadline=force_at_deadline(settings, record.kind),
        exclude_from_lb=exclude_from_lb(settings, record.kind, record.response),
        dry_run=settings.dry_run,
        resume=resume,
    )


def holds_node(record: NoticeRecord) -> bool:
    """Does this notice keep the node cordoned? Open or finished responses that were not
    cancelled, superseded or released."""
    return (
        record.response in ACTING_RESPONSES
        and record.phase in (SEEN, ACTING, DONE)
        and not record.uncordon_pending
        and (record.phase != DONE or record.cordoned)
    )


def held_by_other(records: Mapping[str, NoticeRecord], notice_id: str) -> str | None:
    """Another notice that still holds the node, if any (spot interruptions first)."""
    others = [r for r in records.values() if r.id != notice_id and holds_node(r)]
    others.sort(key=lambda r: (r.kind != NoticeKind.SPOT_ITN.value, r.deadline))
    return others[0].id if others else None


def should_supersede(new: Plan, running: NoticeRecord) -> bool:
    """A new response takes the node over when it is at least as strong and more urgent."""
    if new.response != "drain":
        return False
    return running.response == "cordon" or new.deadline < parse_iso(running.deadline)


# --- a poll ----------------------------------------------------------------------------------


def decide_poll(
    records: Mapping[str, NoticeRecord],
    poll: PollResult,
    absences: Mapping[str, Absence],
    settings: Settings,
    ctx: Context,
) -> Decision:
    actions: list[Action] = []
    seen_records: dict[str, NoticeRecord] = dict(records)
    for problem in poll.problems:
        actions.append(Say(f"problem-{problem}", f"IMDS: {problem}", logging.WARNING))
    running = seen_records.get(ctx.running) if ctx.running else None
    for notice in poll.notices.values():
        if notice.note:
            actions.append(Say(f"note-{notice.id}", f"notice {notice.id}: {notice.note}", logging.WARNING))
        record = seen_records.get(notice.id)
        if notice.state == COMPLETED:
            if record is not None:
                actions.extend(_event_over(record, seen_records, "completed", settings))
            continue
        if notice.state != ACTIVE:
            if record is not None and record.phase not in (CANCELLED, EXPIRED, SKIPPED, SUPERSEDED):
                actions.extend(
                    _cancel(
                        record, seen_records, f"scheduled event is now {notice.state}", ctx, settings, poll
                    )
                )
            continue
        if record is not None and _from_earlier_boot(record, ctx):
            record = None  # an ASG state seen again after the instance came back: a new notice
        if record is None:
            accept = _accept(notice, settings, ctx)
            actions.append(accept)
            seen_records[notice.id] = accept.record
            if (
                accept.plan is not None
                and running is not None
                and running.phase in OPEN_PHASES
                and should_supersede(accept.plan, running)
            ):
                actions.append(Supersede(running.id, by=notice.id))
                running = None
        elif record.phase == CANCELLED:
            actions.append(
                Say(
                    f"back-{record.id}",
                    f"notice {record.id} is back (active) after it was "
                    "cancelled; not acting on the same notice twice",
                    logging.WARNING,
                )
            )
    new_absences = dict(absences)
    for record in records.values():
        if record.kind not in poll.answered:
            continue
        if record.id in poll.notices:
            new_absences.pop(record.id, None)
            continue
        if record.kind == NoticeKind.SPOT_ITN.value and record.phase in OPEN_PHASES:
            actions.append(
                Say(
                    f"vanished-{record.id}",
                    f"notice {record.id} is no longer in IMDS; carrying on: "
                    "a spot interruption is never withdrawn",
                )
            )
            continue
        if record.kind not in WITHDRAWABLE_KINDS or record.phase in (CANCELLED, EXPIRED, SKIPPED, SUPERSEDED):
            continue
        if record.outcome.startswith("undone") and record.phase == DONE:
            continue  # already over and released
        absence = new_absences.get(record.id)
        absence = Absence(ctx.now, 1) if absence is None else replace(absence, polls=absence.polls + 1)
        new_absences[record.id] = absence
        gone_for = (ctx.now - absence.since).total_seconds()
        if absence.polls < settings.withdrawn_after_polls or gone_for < settings.withdrawn_after:
            continue  # IMDS answers do flap: one empty answer is not a withdrawal
        new_absences.pop(record.id, None)
        if record.kind == NoticeKind.SCHEDULED.value and parse_iso(record.deadline) <= ctx.now:
            # IMDS drops an event some time after it happened: that is not a withdrawal
            actions.extend(_event_over(record, seen_records, "no longer listed after its time", settings))
        elif record.phase in (SEEN, ACTING, DONE):
            actions.extend(_cancel(record, seen_records, "notice withdrawn from IMDS", ctx, settings, poll))
    for notice_id in list(new_absences):
        if notice_id not in records:
            new_absences.pop(notice_id)
    actions.extend(uncordon_retries(seen_records, ctx))
    forget = forgettable(records, poll, settings)
    if forget:
        actions.append(Forget(forget))
    return Decision(tuple(actions), new_absences)


def uncordon_retries(records: Mapping[str, NoticeRecord], ctx: Context) -> list[Action]:
    """An uncordon the worker could not carry out (the API did not answer) is decided again
    UNCORDON_RETRY_S after it failed, for as long as the agent runs: until it is done the node
    stays cordoned and the record is kept. If another notice holds the node by then, only the
    record lets go."""
    actions: list[Action] = []
    for notice_id, failure in sorted(ctx.failed_uncordons.items()):
        record = records.get(notice_id)
        if record is None or not record.uncordon_pending:
            continue
        if (ctx.now - failure.at).total_seconds() >= UNCORDON_RETRY_S:
            actions.append(_uncordon(notice_id, failure.reason, records))
    return actions


def still_needed(record: NoticeRecord, poll: PollResult, settings: Settings) -> bool:
    """Must this record be kept, however old? While it is open, holds the node, has an uncordon
    to finish or a lifecycle hook to complete, and while its notice may still be in IMDS (without
    the record, the notice would be acted on, and reported, a second time)."""
    if record.phase in OPEN_PHASES or record.uncordon_pending or holds_node(record):
        return True
    if settings.asg_lifecycle_hook and lifecycle.hooked(record) and not lifecycle.settled(record):
        return True
    return still_listed(record, poll)


def forgettable(
    records: Mapping[str, NoticeRecord], poll: PollResult, settings: Settings, keep: int = KEEP_CLOSED
) -> tuple[str, ...]:
    """The closed records to drop: all that nothing needs but the `keep` most recently seen."""
    unneeded = [record for record in records.values() if not still_needed(record, poll, settings)]
    unneeded.sort(key=lambda record: (record.first_seen, record.id), reverse=True)
    return tuple(sorted(record.id for record in unneeded[keep:]))


def said_keys(notice_id: str) -> tuple[str, ...]:
    """The Say keys the core uses for one notice (forgotten with its record)."""
    return tuple(f"{prefix}-{notice_id}" for prefix in NOTICE_SAY_KEYS)


def _from_earlier_boot(record: NoticeRecord, ctx: Context) -> bool:
    return (
        record.kind == NoticeKind.ASG.value
        and record.phase not in OPEN_PHASES
        and _handled_by(record) < ctx.boot_time
    )


def _accept(notice: Notice, settings: Settings, ctx: Context) -> Accept:
    deadline, why = deadline_for(notice, ctx.now, settings)
    response = response_for(settings, notice.kind.value)
    gate = gate_reason(notice.kind.value, settings, ctx.spot_label, ctx.imds_life_cycle)
    if response != "ignore" and gate:
        response = "gated"
    record = NoticeRecord(
        id=notice.id,
        kind=notice.kind,
        action=notice.action,
        deadline=iso(deadline),
        first_seen=iso(ctx.now),
        response=response,
        not_after=iso(notice.not_after) if notice.not_after is not None else None,
    )
    plan: Plan | None = None
    if response in ACTING_RESPONSES:
        plan = plan_for(record, settings)
    else:
        record = replace(record, phase=SKIPPED, outcome=gate if response == "gated" else "ignored by config")
    in_s = (deadline - ctx.now).total_seconds()
    message = (
        f"notice {notice.id} ({notice.kind.value}: {notice.action}), deadline {iso(deadline)} "
        f"(in {in_s:.0f}s; {why}); response: {response}" + (f" ({record.outcome})" if record.outcome else "")
    )
    return Accept(record, notice, plan, message)


def _cancel(
    record: NoticeRecord,
    records: Mapping[str, NoticeRecord],
    reason: str,
    ctx: Context,
    settings: Settings,
    poll: PollResult,
) -> list[Action]:
    touched = record.phase in (SEEN, ACTING, DONE) and record.response in ACTING_RESPONSES
    # Responses it had superseded, whose notices are still live, are the node's again.
    superseded = [
        other
        for other in records.values()
        if other.phase == SUPERSEDED
        and other.superseded_by == record.id
        and parse_iso(other.deadline) > ctx.now
    ]
    reopened: list[Action] = []
    said: list[Action] = []
    for other in superseded:
        if still_listed(other, poll):
            reopened.append(Reopen(plan_for(other, settings, resume=True)))
        else:
            said.append(
                Say(
                    f"gone-{other.id}",
                    f"notice {other.id}: {record.id}, which superseded it, was cancelled, but {other.id} "
                    "is no longer in IMDS either; not resumed",
                    logging.WARNING,
                )
            )
    undo = touched and not reopened and held_by_other(records, record.id) is None
    return [Cancel(record.id, reason, undo=undo), *reopened, *said]


def still_listed(record: NoticeRecord, poll: PollResult) -> bool:
    """May this record's notice still be live? Not when its path answered this poll without it
    (or with it no longer active). A path that did not answer says nothing: live, as far as known."""
    if record.kind not in poll.answered:
        return True
    notice = poll.notices.get(record.id)
    return notice is not None and notice.state == ACTIVE


def _event_over(
    record: NoticeRecord, records: Mapping[str, NoticeRecord], how: str, settings: Settings
) -> list[Action]:
    """The maintenance happened. Unlike a cancellation the record stays done, and the cordon is
    lifted only when UNCORDON_AFTER_REBOOT says so, once the response in progress has ended."""
    if record.phase not in (SEEN, ACTING, DONE) or not record.cordoned or record.uncordon_pending:
        return []
    key = f"over-{record.id}"
    if record.phase != DONE:
        return [
            Say(
                key,
                f"notice {record.id}: scheduled event {how}; the response in progress runs to its end first",
            )
        ]
    if not settings.uncordon_after_reboot:
        return [
            Say(
                key,
                f"notice {record.id}: scheduled event {how}; the node stays cordoned "
                "(UNCORDON_AFTER_REBOOT=false)",
            )
        ]
    return [
        Say(key, f"notice {record.id}: scheduled event {how}; uncordoning (UNCORDON_AFTER_REBOOT)"),
        _uncordon(record.id, f"scheduled event {how}", records),
    ]


def _uncordon(notice_id: str, reason: str, records: Mapping[str, NoticeRecord]) -> Uncordon:
    other = held_by_other(records, notice_id)
    return Uncordon(notice_id, reason, keep=other is not None, held_by=other or "")


def _expire(record: NoticeRecord, reason: str) -> Expire:
    return Expire(
        record.id, reason, f"notice {record.id}: deadline {record.deadline} passed ({reason}); not acting"
    )


# --- a start ---------------------------------------------------------------------------------


def decide_start(records: Mapping[str, NoticeRecord], settings: Settings, ctx: Context) -> tuple[Action, ...]:
    """On start: finish what was open (within its deadline), redo decided uncordons, and lift the
    cordon of a notice whose instance has since come back on a new boot."""
    actions: list[Action] = []
    for record in records.values():
        if record.uncordon_pending:
            actions.append(_uncordon(record.id, "decided before the restart", records))
            continue
        if record.phase in OPEN_PHASES:
            if parse_iso(record.deadline) <= ctx.now:
                actions.append(_expire(record, "deadline passed while the agent was not running"))
            elif record.response in ACTING_RESPONSES:
                actions.append(Resume(plan_for(record, settings, resume=True)))
            continue
        actions.extend(_after_boot(record, records, settings, ctx))
    return tuple(actions)


def _after_boot(
    record: NoticeRecord, records: Mapping[str, NoticeRecord], settings: Settings, ctx: Context
) -> list[Action]:
    """A notice whose instance came back on a new boot (a reboot, a spot stop or hibernate, a
    warm pool): the event happened, so the cordon is lifted if UNCORDON_AFTER_REBOOT says so."""
    if not (settings.uncordon_after_reboot and _came_back(record) and _handled_by(record) < ctx.boot_time):
        return []
    return [
        Say(
            f"over-{record.id}",
            f"notice {record.id}: the {record.action} happened (booted since); uncordoning",
        ),
        _uncordon(record.id, f"rebooted after the {record.action}", records),
    ]


def _came_back(record: NoticeRecord) -> bool:
    if record.phase != DONE or not record.cordoned:
        return False
    return (
        (record.kind == NoticeKind.SCHEDULED.value and record.action in REBOOT_CODES)
        or (record.kind == NoticeKind.SPOT_ITN.value and record.action in COMES_BACK_SPOT_ACTIONS)
        or (record.kind == NoticeKind.ASG.value and record.action in COMES_BACK_ASG_STATES)
    )


def _handled_by(record: NoticeRecord) -> float:
    """When the notice was handled, at the latest. A record rebuilt from the node's labels has no
    handled time, but nothing is ever done after a deadline, so its deadline bounds it."""
    if record.handled_at is not None:
        return record.handled_at
    deadline = parse_optional_iso(record.deadline)
    return deadline.timestamp() if deadline is not None else float("inf")


# --- a lost state file -----------------------------------------------------------------------


def decide_adopt(
    found: NodeNotice, records: Mapping[str, NoticeRecord], settings: Settings, ctx: Context
) -> tuple[Action, ...]:
    """Rebuild a lost record from the node: a drain under way is resumed within its original
    deadline, a finished one is not repeated."""
    known = records.get(found.id)
    if known is not None and (known.phase != SEEN or known.cordoned):
        return ()  # the record knows more than the labels do
    try:
        deadline = parse_iso(found.deadline)
        kind = NoticeKind(found.kind)
        response = response_for(settings, kind)
    except (KeyError, ValueError) as error:
        return (
            Say(
                "adopt",
                f"state: cannot rebuild from the node's labels ({type(error).__name__}: {error}); "
                "starting afresh",
                logging.ERROR,
            ),
        )
    finished = found.agent in ("drained", "cordoned")
    first_seen = known.first_seen if known is not None else iso(ctx.now)
    record = NoticeRecord(
        id=found.id,
        kind=kind,
        action=found.action,
        deadline=iso(deadline),
        first_seen=first_seen,
        response=response,
        phase=DONE if finished else ACTING,
        cordoned=found.cordoned,
        labelled=True,
        outcome=f"finished before the state file was lost (node label {found.agent})" if finished else "",
    )
    message = (
        f"state rebuilt from the node's labels: notice {record.id} ({found.kind}), deadline "
        f"{record.deadline}, {'already finished' if finished else 'in progress: resuming it'}"
    )
    if known is not None and not finished:
        # Seen again in IMDS before the API was up: its queued response resumes the drain.
        return (Say("adopt", message, logging.WARNING),)
    notice = Notice(kind=kind, id=found.id, deadline=deadline, action=found.action, raw="")
    actions: list[Action] = [Accept(record, notice, None, message)]
    if finished:
        actions.extend(_after_boot(record, {**records, record.id: record}, settings, ctx))
    else:
        if deadline <= ctx.now:
            actions.append(_expire(record, "deadline passed while the agent was not running"))
        elif response in ACTING_RESPONSES:
            actions.append(Resume(plan_for(record, settings, resume=True)))
    return tuple(actions)


def expired_before_start(plan: Plan, now: datetime) -> bool:
    """Never act after a deadline (e.g. Kubernetes became ready too late)."""
    return plan.deadline <= now


# --- the end of a response -------------------------------------------------------------------


def response_finished(progress: NoticeRecord) -> bool:
    """Did the response get all the way (a cordon in place, or a drain that ran to its end)?"""
    return (progress.response == "cordon" and progress.cordoned) or progress.drain_finished is not None


def response_ended(record: NoticeRecord, ended: ResponseEnded) -> tuple[Action, ...]:
    """What the end of a response means for its record (as the store holds it now)."""
    if ended.ending == Ending.LATE:
        if record.phase not in OPEN_PHASES:
            return ()
        reason = "deadline passed before the response could start"
        message = (
            f"notice {record.id}: its deadline {record.deadline} passed "
            "before Kubernetes was ready; not acting"
        )
        return (Expire(record.id, reason, message),)
    if ended.progress is None:  # dropped before it began: its cancel or supersede is recorded already
        return ()
    if ended.ending == Ending.STOPPED or record.phase in (CANCELLED, SUPERSEDED):
        return (StopEarly(record.id, ended.progress),)
    if ended.ending == Ending.INTERRUPTED and not response_finished(ended.progress):
        return (KeepOpen(ended.progress),)  # the next start resumes it
    return (Close(record.id, ended.progress, ended.at),)
