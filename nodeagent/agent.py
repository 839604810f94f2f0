"""The loop and the state machine. Only this module decides what to do about a notice.

watching -> (notice) -> responding -> done | cancelled | expired

The main thread polls IMDS, reconciles what it sees against the state file, and hands each
new notice to one worker thread as a Plan. The worker carries the plan out through a Responder
(Kubernetes, or log-only). Every step is recorded in the state file before and after it runs,
so a restart finishes an unfinished response and never repeats a finished one.
"""
from __future__ import annotations

import logging
import queue
import select
import signal
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Dict, List, Optional, Protocol, Sequence

from nodeagent import notices as notice_parsers
from nodeagent.config import Settings, restart_only_changes
from nodeagent.imds import ImdsClient, ImdsError, ImdsUnavailable, InstanceIdentity
from nodeagent.notices import Notice, NoticeKind, NoticeParseError
from nodeagent.notify import SystemdNotifier
from nodeagent.state import (
    ACTING,
    CANCELLED,
    DONE,
    EXPIRED,
    OPEN_PHASES,
    SEEN,
    SKIPPED,
    AgentState,
    NoticeRecord,
    StateStore,
)

log = logging.getLogger("nodeagent.agent")

SPOT_ONLY_KINDS = (NoticeKind.SPOT_ITN.value, NoticeKind.REBALANCE.value)
REBOOT_CODES = ("system-reboot", "instance-reboot")
STOPPED_LABEL_TIMEOUT_S = 2.0
ACTIVE = "active"
COMPLETED = "completed"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return notice_parsers.parse_rfc3339_utc(text)


@dataclass(frozen=True)
class Plan:
    """What the worker must do for one notice. Everything downstream works from `deadline`."""

    notice_id: str
    kind: str
    action: str
    response: str  # drain | cordon
    deadline: datetime
    force_at_deadline: bool
    exclude_from_lb: bool
    dry_run: bool
    resume: bool = False


class StepHooks(Protocol):
    def checkpoint(self) -> None: ...

    def progress(self, gone: int, total: int, deadline: datetime) -> None: ...

    def should_stop(self) -> bool: ...

    def step(self, record: NoticeRecord, reason: str, message: str) -> None: ...


class Responder(Protocol):
    """Carries out plans. Decides nothing."""

    def startup(self, identity: Optional[InstanceIdentity]) -> Optional[str]:
        """None once ready to act; otherwise a STATUS text saying what it waits for."""

    def describe(self) -> str: ...

    def spot_label(self) -> Optional[bool]:
        """True/False when the node's lifecycle=Ec2Spot label is known, None when it is not."""

    def execute(self, plan: Plan, record: NoticeRecord, hooks: StepHooks) -> None: ...

    def undo(self, record: NoticeRecord, reason: str) -> None: ...

    def agent_state_changed(self, agent_state: str, timeout_s: Optional[float] = None) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """Events, webhook, metrics. Must never raise into the agent."""

    def notice_received(self, notice: Notice, record: NoticeRecord, plan: Optional[Plan]) -> None: ...

    def step(self, record: NoticeRecord, reason: str, message: str) -> None:
        """reason: Cordoned, DrainStarted, DrainFinished, DrainFailed, Uncordoned."""

    def finished(self, record: NoticeRecord) -> None: ...

    def cancelled(self, record: NoticeRecord) -> None: ...

    def polled(self, ok: bool, errors: Dict[str, str]) -> None: ...

    def close(self) -> None: ...


class LoggingResponder:
    """A responder that only logs: `nodeagent run --log-only`, and the watcher without Kubernetes."""

    def startup(self, identity: Optional[InstanceIdentity]) -> Optional[str]:
        return None

    def describe(self) -> str:
        return "log-only"

    def spot_label(self) -> Optional[bool]:
        return None

    def execute(self, plan: Plan, record: NoticeRecord, hooks: StepHooks) -> None:
        log.info(
            "would %s for %s (%s) by %s [log-only: no Kubernetes actions]",
            plan.response, plan.notice_id, plan.action, iso(plan.deadline),
        )
        record.outcome = f"logged ({plan.response})"

    def undo(self, record: NoticeRecord, reason: str) -> None:
        log.info("would undo %s for %s: %s [log-only]", record.response, record.id, reason)

    def agent_state_changed(self, agent_state: str, timeout_s: Optional[float] = None) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class PollResult:
    notices: Dict[str, Notice]
    # Kinds whose path answered this poll. A notice missing from a kind that did not answer is
    # not "gone": we only cancel on a real answer.
    answered_kinds: List[str]
    errors: Dict[str, str]


POLL_PATHS = (
    (NoticeKind.SPOT_ITN.value, "spot/instance-action"),
    (NoticeKind.REBALANCE.value, "events/recommendations/rebalance"),
    (NoticeKind.SCHEDULED.value, "events/maintenance/scheduled"),
    (NoticeKind.ASG.value, "autoscaling/target-lifecycle-state"),
)


def parse_body(kind: str, body: str, now: datetime) -> List[Notice]:
    if kind == NoticeKind.SPOT_ITN.value:
        return [notice_parsers.parse_spot_action(body, now)]
    if kind == NoticeKind.REBALANCE.value:
        return [notice_parsers.parse_rebalance(body, now)]
    if kind == NoticeKind.SCHEDULED.value:
        return list(notice_parsers.parse_scheduled(body, now))
    asg = notice_parsers.parse_asg_state(body, now)
    return [asg] if asg else []


class Agent:
    def __init__(
        self,
        settings: Settings,
        responder: Responder,
        *,
        imds: Optional[ImdsClient] = None,
        store: Optional[StateStore] = None,
        notifier: Optional[SystemdNotifier] = None,
        reporters: Sequence[Reporter] = (),
        reload_settings: Optional[Callable[[], Settings]] = None,
        rebuild_reporters: Optional[Callable[[Settings, Sequence[Reporter]], Sequence[Reporter]]] = None,
        boot_time: Optional[float] = None,
        label_stopped: bool = False,
    ):
        self.settings = settings
        self.responder = responder
        self.imds = imds or ImdsClient(_imds_options(settings))
        self.store = store or StateStore(settings.state_dir)
        self.notifier = notifier or SystemdNotifier()
        self.reporters = list(reporters)
        self.reload_settings = reload_settings
        self.rebuild_reporters = rebuild_reporters
        self.label_stopped = label_stopped  # the service: yes; a drill or the demo must not
        self._retiring: List[threading.Thread] = []
        self.boot_time = boot_time if boot_time is not None else _boot_time()
        self.state = AgentState()
        self.identity: Optional[InstanceIdentity] = None
        self.responder_ready = False
        self.last_poll_at: Optional[float] = None
        self.poll_errors = 0
        self._lock = threading.RLock()
        # Signal handlers run in the main thread between any two bytecodes, possibly while it
        # holds a threading lock (inside Event.wait, say), so they must take no lock: they only
        # set plain flags and write a byte to a socket that the loop's sleep selects on. The main
        # thread turns the stop flag into `_stop`, which the other threads read.
        self._stop = threading.Event()
        self._stop_requested = False
        self._reload_requested = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._work: "queue.Queue[Optional[Plan]]" = queue.Queue()
        self._worker: Optional[threading.Thread] = None
        self._active_plan: Optional[Plan] = None
        self._drain_text: Optional[str] = None
        self._pending_plans: List[Plan] = []
        self._error_seen: Dict[str, str] = {}
        self._rebuild_from_node = False  # the state file was lost: read the node before acting
        self._adopt_from_node = False  # no state file: read the node once the API is up

    # ---------------------------------------------------------------- lifecycle

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True
        self._poke()

    def request_reload(self, *_: object) -> None:
        self._reload_requested = True
        self._poke()

    def _poke(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except OSError:  # the buffer is full: the loop has wake-ups pending already
            pass

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def run(self) -> int:
        self._load_state()
        self._worker = threading.Thread(target=self._work_loop, name="responder", daemon=True)
        self._worker.start()
        if not self._wait_for_imds():
            return self._shutdown()
        self._try_responder_startup()
        self.notifier.ready()
        log.info("ready: watching IMDS at %s every %gs (%s)", self.settings.imds_url,
                 self.settings.poll_interval, ", ".join(self._watched_kinds()))
        while not self._stop.is_set():
            started = time.monotonic()
            self.tick()
            self.notifier.watchdog()
            self._sleep_until(started + self.settings.poll_interval)
            if self._reload_requested:
                self._apply_reload()
        return self._shutdown()

    def tick(self) -> None:
        if not self.responder_ready:
            self._try_responder_startup()
        result = self.poll()
        if result.answered_kinds and self._rebuild_from_node:
            # Acting now could repeat a response the lost state file knew about: the node's
            # labels say, once the API can be read.
            if result.notices:
                self._log_once("rebuild", "state file lost: holding notices until the node's own labels "
                               "can be read from the API", logging.WARNING)
        elif result.answered_kinds:
            self.reconcile(result)
        self._update_status()

    def _shutdown(self) -> int:
        self.notifier.stopping()
        busy = self._active_plan is not None
        log.info("stopping%s", ": drain interrupted, it resumes on the next start" if busy else "")
        self._work.put(None)
        if self._worker is not None:
            self._worker.join(timeout=10)
        if self.label_stopped and not busy and self.responder_ready and self.state.agent_state == "watching":
            # A clean stop while idle: the fleet view must not show the node as guarded. One
            # quick attempt; the next start writes "watching" again.
            _quietly(self.responder.agent_state_changed, "stopped", STOPPED_LABEL_TIMEOUT_S)
        with self._lock:
            self.state.status = "stopped"
            self.store.save(self.state)
        for reporter in self.reporters:
            _quietly(reporter.close)
        for closer in self._retiring:
            closer.join(timeout=5)
        self.responder.close()
        self.imds.close()
        self._wake_reader.close()
        self._wake_writer.close()
        return 0

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining > 0:
            select.select([self._wake_reader], [], [], remaining)
        try:
            while self._wake_reader.recv(64):
                pass
        except OSError:  # drained (BlockingIOError)
            pass
        if self._stop_requested:
            self._stop.set()

    def _apply_reload(self) -> None:
        self._reload_requested = False
        if self.reload_settings is None:
            return
        self.notifier.reloading()
        try:
            new_settings = self.reload_settings()
        except Exception as error:  # a bad reload keeps the running config
            log.error("reload failed, keeping the running config: %s", error)
        else:
            pending = restart_only_changes(self.settings, new_settings)
            if pending:
                log.warning("reload: %s changed; that takes effect on the next restart "
                            "(systemctl restart nodeagent)", ", ".join(pending))
            if _imds_options(new_settings) != _imds_options(self.settings):
                self.imds.close()
                self.imds = ImdsClient(_imds_options(new_settings))
            self.settings = new_settings
            if hasattr(self.responder, "settings"):
                self.responder.settings = new_settings
            logging.getLogger("nodeagent").setLevel(new_settings.log_level.upper())
            self._swap_reporters(new_settings)
            log.info("config reloaded")
        self.notifier.ready()

    def _swap_reporters(self, settings: Settings) -> None:
        if self.rebuild_reporters is None:
            return
        running = self.reporters
        try:
            fresh = list(self.rebuild_reporters(settings, running))
        except Exception as error:
            log.error("reload: reporters not rebuilt, keeping the running ones: %s", error)
            return
        self.reporters = fresh  # one assignment: a thread iterating the old list finishes on it
        retired = [old for old in running if not any(old is new for new in fresh)]
        if retired:  # closing flushes queued messages: not on the poll loop
            closer = threading.Thread(target=lambda: [_quietly(r.close) for r in retired],
                                      name="reporter-close", daemon=True)
            closer.start()
            self._retiring = [t for t in self._retiring if t.is_alive()] + [closer]

    # ---------------------------------------------------------------- startup

    def _load_state(self) -> None:
        loaded = self.store.load()
        if loaded.error:
            where = f"; moved aside to {loaded.quarantined}" if loaded.quarantined else ""
            log.warning("state: %s%s; rebuilding from the node's own labels", loaded.error, where)
            self._rebuild_from_node = True
        elif loaded.missing:
            # Usually a first start; but a wiped state directory must not forget a drain the
            # node's labels say was under way. Nothing is held for it: with the API up, the labels
            # are read before the first poll is acted on.
            self._adopt_from_node = True
        self.state = loaded.state
        self.state.pid = _pid()
        for record in self.state.notices.values():
            if record.phase in OPEN_PHASES:
                self._resume(record)
        self._save()

    def _resume(self, record: NoticeRecord) -> None:
        deadline = parse_iso(record.deadline)
        if deadline <= utcnow():
            record.phase = EXPIRED
            record.outcome = "deadline passed while the agent was not running"
            log.error("notice %s: deadline %s passed while the agent was down; not acting",
                      record.id, record.deadline)
            return
        if record.response not in ("drain", "cordon"):
            record.phase = DONE
            return
        plan = self._plan_for(record, deadline, resume=True)
        log.info("resuming %s for %s (deadline in %.0fs)", record.response, record.id,
                 (deadline - utcnow()).total_seconds())
        self._pending_plans.append(plan)

    def _wait_for_imds(self) -> bool:
        while not self._stop.is_set():
            try:
                self.identity = self.imds.identity()
                return True
            except ImdsError as error:
                text = f"waiting for IMDS at {self.settings.imds_url}: {error}"
                self._log_once("imds-start", text, logging.WARNING)
                self.notifier.status(text)
            self.notifier.watchdog()
            self._sleep_until(time.monotonic() + min(5.0, max(1.0, self.settings.poll_interval)))
            if self._reload_requested:
                self._apply_reload()
        return False

    def _try_responder_startup(self) -> None:
        try:
            waiting_for = self.responder.startup(self.identity)
        except Exception as error:  # the responder reports its own errors; never die here
            waiting_for = f"Kubernetes not ready: {error}"
            self._log_once("responder", waiting_for, logging.WARNING)
        if waiting_for is not None:
            self._startup_status = waiting_for
            return
        self.responder_ready = True
        self._forget_error("responder")
        self._after_responder_ready()

    def _after_responder_ready(self) -> None:
        if self._rebuild_from_node or self._adopt_from_node:
            self._adopt_notice_on_node(first_start=not self._rebuild_from_node)
            self._rebuild_from_node = self._adopt_from_node = False
        self._uncordon_after_reboot()
        for plan in self._pending_plans:
            self._work.put(plan)
        self._pending_plans.clear()
        self.responder.agent_state_changed(self.state.agent_state)

    def _adopt_notice_on_node(self, first_start: bool = False) -> None:
        """The state file was lost (or is missing). The node's own labels and annotations (set with
        the cordon: notice id, kind, deadline, action, and our agent state) say which notice was
        being handled, so a drain in progress is resumed within its original deadline and a
        finished one is not repeated."""
        found = getattr(self.responder, "notice_on_node", lambda: None)()
        if not found:
            if not first_start:
                log.info("state rebuilt from the node's labels: no notice in progress on it")
            return
        if str(found["id"]) in self.state.notices:
            return  # seen again in IMDS before the API was up: already being handled
        if first_start:
            log.warning("state: no state file, but the node's labels name notice %s", found["id"])
        kind = str(found["kind"])
        try:
            deadline = parse_iso(str(found["deadline"]))
            response = self.settings.response_for(kind)
        except (KeyError, ValueError) as error:
            log.error("state: cannot rebuild from the node's labels (%s: %s); starting afresh", type(error).__name__, error)
            return
        finished = found["agent"] in ("drained", "cordoned")
        record = NoticeRecord(
            id=str(found["id"]), kind=kind, action=str(found["action"]), deadline=iso(deadline),
            first_seen=iso(utcnow()), response=response, phase=DONE if finished else ACTING,
            cordoned=bool(found["cordoned"]), labelled=True,
            outcome=f"finished before the state file was lost (node label {found['agent']})" if finished else "",
        )
        log.warning("state rebuilt from the node's labels: notice %s (%s), deadline %s, %s", record.id, kind,
                    record.deadline, "already finished" if finished else "in progress: resuming it")
        with self._lock:
            self.state.notices[record.id] = record
            self.state.last_notice = record.id
            if finished:
                self.state.agent_state = str(found["agent"])
            else:
                self._resume(record)
            self._save()

    def _uncordon_after_reboot(self) -> None:
        if not self.settings.uncordon_after_reboot:
            return
        for record in list(self.state.notices.values()):
            if (
                record.kind == NoticeKind.SCHEDULED.value
                and record.action in REBOOT_CODES
                and record.phase == DONE
                and record.cordoned
                and _handled_by(record) < self.boot_time
            ):
                log.info("notice %s: the %s happened (booted since); uncordoning", record.id, record.action)
                self._undo(record, "rebooted after the scheduled reboot")

    # ---------------------------------------------------------------- polling

    def _watched_kinds(self) -> List[str]:
        return [kind for kind, _ in POLL_PATHS if self.settings.response_for(kind) != "ignore"]

    def poll(self) -> PollResult:
        now = utcnow()
        found: Dict[str, Notice] = {}
        answered: List[str] = []
        errors: Dict[str, str] = {}
        for kind, path in POLL_PATHS:
            if kind not in self._watched_kinds():
                continue
            try:
                body = self.imds.get(path)
            except ImdsError as error:
                errors[kind] = str(error)
                # One unreachable IMDS means the rest will be too; don't stall the loop. A bad body
                # on one path (too large, not UTF-8) says nothing about the others: poll them.
                if isinstance(error, ImdsUnavailable):
                    break
                continue
            answered.append(kind)
            if body is None:
                continue
            try:
                for notice in parse_body(kind, body, now):
                    found[notice.id] = notice
            except NoticeParseError as error:
                errors[kind] = f"malformed IMDS body: {error}"
                answered.remove(kind)
        self.last_poll_at = time.monotonic()
        self._report_poll_errors(errors)
        for reporter in self.reporters:
            _quietly(reporter.polled, not errors, errors)
        return PollResult(found, answered, errors)

    def _report_poll_errors(self, errors: Dict[str, str]) -> None:
        if errors:
            self.poll_errors += len(errors)
            for kind, text in errors.items():
                self._log_once(f"poll-{kind}", f"IMDS poll ({kind}): {text}", logging.WARNING)
        else:
            for key in [k for k in self._error_seen if k.startswith("poll-")]:
                log.info("IMDS poll recovered (%s)", key[len("poll-"):])
                self._forget_error(key)

    # ---------------------------------------------------------------- deciding

    def reconcile(self, result: PollResult) -> None:
        with self._lock:
            for notice in result.notices.values():
                record = self.state.notices.get(notice.id)
                if notice.state == COMPLETED:
                    if record is not None:
                        self._scheduled_event_over(record, "completed")
                    continue
                if notice.state != ACTIVE:
                    if record is not None and record.phase not in (CANCELLED,):
                        self._cancel(record, f"scheduled event is now {notice.state}")
                    continue
                if record is None:
                    self._accept(notice)
                elif record.phase == CANCELLED:
                    self._log_once(f"back-{record.id}",
                                   f"notice {record.id} is back (active) after it was cancelled; "
                                   "not acting on the same notice twice", logging.WARNING)
            for record in list(self.state.notices.values()):
                if (
                    record.kind == NoticeKind.SPOT_ITN.value
                    and record.kind in result.answered_kinds
                    and record.id not in result.notices
                    and record.phase in OPEN_PHASES
                ):
                    self._log_once(f"vanished-{record.id}",
                                   f"notice {record.id} is no longer in IMDS; carrying on: "
                                   "a spot interruption is never withdrawn", logging.INFO)
                if (
                    record.kind in (NoticeKind.REBALANCE.value, NoticeKind.SCHEDULED.value)
                    and record.kind in result.answered_kinds
                    and record.id not in result.notices
                    and record.phase not in (CANCELLED, EXPIRED, SKIPPED)
                    and record.outcome != "withdrawn"
                ):
                    if record.kind == NoticeKind.SCHEDULED.value and parse_iso(record.deadline) <= utcnow():
                        # IMDS drops an event some time after it happened: that is not a withdrawal
                        self._scheduled_event_over(record, "no longer listed after its time")
                    else:
                        self._cancel(record, "notice withdrawn from IMDS")

    def _accept(self, notice: Notice) -> None:
        now = utcnow()
        deadline = self._deadline_for(notice, now)
        response = self.settings.response_for(notice.kind.value)
        gate_reason = self._gate(notice.kind.value)
        if response != "ignore" and gate_reason:
            response = "gated"
        record = NoticeRecord(
            id=notice.id, kind=notice.kind.value, action=notice.action, deadline=iso(deadline),
            first_seen=iso(now), response=response,
        )
        self.state.notices[notice.id] = record
        self.state.last_notice = notice.id
        plan: Optional[Plan] = None
        if response in ("drain", "cordon"):
            record.phase = SEEN
            plan = self._plan_for(record, deadline)
        else:
            record.phase = SKIPPED
            record.outcome = gate_reason if response == "gated" else "ignored by config"
        self._save()
        log.warning(
            "notice %s (%s: %s), deadline %s (in %.0fs); response: %s%s",
            notice.id, notice.kind.value, notice.action, iso(deadline),
            (deadline - now).total_seconds(), response, f" ({record.outcome})" if record.outcome else "",
        )
        for reporter in self.reporters:
            _quietly(reporter.notice_received, notice, record, plan)
        if plan is not None:
            if self.responder_ready:
                self._work.put(plan)
            else:
                log.warning("notice %s: Kubernetes not ready yet (%s); acting as soon as it is",
                            notice.id, getattr(self, "_startup_status", "starting"))
                self._pending_plans.append(plan)

    def _deadline_for(self, notice: Notice, now: datetime) -> datetime:
        if notice.kind in (NoticeKind.REBALANCE, NoticeKind.ASG):
            return now + timedelta(seconds=self.settings.drain_window)
        floor = now + timedelta(seconds=self.settings.drain_margin)
        if notice.deadline < floor:
            log.warning("notice %s: its time %s is already (nearly) past; acting at once with zero grace",
                        notice.id, iso(notice.deadline))
            return floor
        return notice.deadline

    def _gate(self, kind: str) -> str:
        """'' when the spot gate passes (or does not apply), else why not."""
        if kind not in SPOT_ONLY_KINDS or self.settings.spot_gate == "off":
            return ""
        label = self.responder.spot_label()
        imds_spot = None if self.identity is None else self.identity.life_cycle == "spot"
        gate = self.settings.spot_gate
        checks = {
            "label": bool(label),
            "imds": bool(imds_spot),
            "label-or-imds": bool(label) or bool(imds_spot),
            "label-and-imds": bool(label) and bool(imds_spot),
        }
        if checks[gate]:
            return ""
        return (f"SPOT_GATE={gate} says this is not a spot node "
                f"(label lifecycle=Ec2Spot: {_known(label)}, IMDS instance-life-cycle: "
                f"{self.identity.life_cycle if self.identity else 'unknown'})")

    def _plan_for(self, record: NoticeRecord, deadline: datetime, resume: bool = False) -> Plan:
        return Plan(
            notice_id=record.id, kind=record.kind, action=record.action, response=record.response,
            deadline=deadline, force_at_deadline=self.settings.force_for(record.kind),
            exclude_from_lb=self.settings.exclude_lb_for(record.kind), dry_run=self.settings.dry_run,
            resume=resume,
        )

    def _scheduled_event_over(self, record: NoticeRecord, how: str) -> None:
        """The maintenance happened. Unlike a cancellation the record stays done, and the cordon is
        lifted only when UNCORDON_AFTER_REBOOT says so (once the response in progress has ended)."""
        if record.phase not in (SEEN, ACTING, DONE) or not record.cordoned:
            return
        if record.phase != DONE:
            self._log_once(f"over-{record.id}", f"notice {record.id}: scheduled event {how}; "
                           "the response in progress runs to its end first", logging.INFO)
            return
        if not self.settings.uncordon_after_reboot:
            self._log_once(f"over-{record.id}", f"notice {record.id}: scheduled event {how}; "
                           "the node stays cordoned (UNCORDON_AFTER_REBOOT=false)", logging.INFO)
            return
        if not self.responder_ready:
            return  # asked again on the next poll
        log.info("notice %s: scheduled event %s; uncordoning (UNCORDON_AFTER_REBOOT)", record.id, how)
        if not self._kept_cordoned_for_other(record):
            self._undo(record, f"scheduled event {how}")
        record.cordoned = False
        self._save()

    def _kept_cordoned_for_other(self, record: NoticeRecord) -> bool:
        others = [r for r in self.state.notices.values()
                  if r is not record and r.phase in (SEEN, ACTING, DONE)
                  and r.response in ("drain", "cordon") and r.kind == NoticeKind.SPOT_ITN.value]
        if others:
            log.info("notice %s: keeping the node cordoned for %s", record.id, others[0].id)
        return bool(others)

    def _cancel(self, record: NoticeRecord, reason: str) -> None:
        was_acting = record.phase in (SEEN, ACTING, DONE) and record.response in ("drain", "cordon")
        log.warning("notice %s cancelled: %s", record.id, reason)
        if was_acting and self.responder_ready and not self._kept_cordoned_for_other(record):
            self._undo(record, reason)
        record.phase = CANCELLED
        record.outcome = reason
        self._save()
        for reporter in self.reporters:
            _quietly(reporter.cancelled, record)

    def _undo(self, record: NoticeRecord, reason: str) -> None:
        try:
            self.responder.undo(record, reason)
            record.cordoned = False
            record.labelled = False
            record.outcome = f"undone: {reason}"
            self._set_agent_state("watching")
            for reporter in self.reporters:
                _quietly(reporter.step, record, "Uncordoned", f"uncordoned: {reason}")
        except Exception as error:
            log.error("notice %s: could not undo (%s); the node may stay cordoned", record.id, error)
        self._save()

    # ---------------------------------------------------------------- acting

    def _work_loop(self) -> None:
        while True:
            plan = self._work.get()
            if plan is None:
                return
            if self._stop.is_set():
                continue
            self._execute(plan)

    def _execute(self, plan: Plan) -> None:
        with self._lock:
            record = self.state.notices.get(plan.notice_id)
            if record is None or record.phase not in OPEN_PHASES:
                return
            if plan.deadline <= utcnow():  # e.g. Kubernetes became ready too late: never act after it
                record.phase = EXPIRED
                record.outcome = "deadline passed before the response could start"
                log.error("notice %s: its deadline %s passed before Kubernetes was ready; not acting",
                          plan.notice_id, iso(plan.deadline))
                self._save()
                return
            record.phase = ACTING
            self._active_plan = plan
            self._set_agent_state("draining" if plan.response == "drain" else "cordoning")
            self._save()
        hooks = _Hooks(self, plan)
        try:
            self.responder.execute(plan, record, hooks)
        except Exception as error:
            log.error("notice %s: response failed: %s", plan.notice_id, error,
                      exc_info=not getattr(error, "expected", False))
            record.outcome = f"failed: {error}"
        finally:
            self._active_plan = None
            self._drain_text = None
        with self._lock:
            if self._stop.is_set() and not _finished(record):
                self._save()  # stays ACTING: the next start resumes it
                return
            # Said before the phase flips, so whoever watches the state sees the line first.
            log.info("notice %s: %s", plan.notice_id, record.outcome or "done")
            record.phase = DONE if record.phase == ACTING else record.phase
            record.handled_at = time.time()
            finished_state = "drained" if plan.response == "drain" else "cordoned"
            if utcnow() < plan.deadline:
                self._set_agent_state(finished_state)
            else:  # a drain that ran to its deadline: record it, but write nothing more to the node
                self.state.agent_state = finished_state
            self._save()
        for reporter in self.reporters:
            _quietly(reporter.finished, record)

    def _set_agent_state(self, agent_state: str) -> None:
        if self.state.agent_state != agent_state:
            self.state.agent_state = agent_state
            if self.responder_ready:
                _quietly(self.responder.agent_state_changed, agent_state)

    # ---------------------------------------------------------------- reporting

    def _update_status(self) -> None:
        if self._drain_text:
            text = self._drain_text
        elif not self.responder_ready:
            text = getattr(self, "_startup_status", "starting")
        elif self._error_seen.get("poll-" + POLL_PATHS[0][0]) or any(
            k.startswith("poll-") for k in self._error_seen
        ):
            first = next(v for k, v in self._error_seen.items() if k.startswith("poll-"))
            text = f"{first}; {self.responder.describe()}"
        else:
            text = (f"watching IMDS ({', '.join(self._watched_kinds())}); {self.responder.describe()}; "
                    f"last poll {self._since_poll():.1f}s ago")
            if self.state.agent_state not in ("watching",):
                text += f"; node {self.state.agent_state}"
        self.notifier.status(text)
        with self._lock:
            if self.state.status != text.split("; last poll")[0]:
                self.state.status = text.split("; last poll")[0]
                self._save()

    def _since_poll(self) -> float:
        return 0.0 if self.last_poll_at is None else time.monotonic() - self.last_poll_at

    def drain_progress(self, plan: Plan, gone: int, total: int, deadline: datetime) -> None:
        left = max(0.0, (deadline - utcnow()).total_seconds())
        self._drain_text = f"draining: {gone}/{total} pods gone, deadline in {left:.0f}s"
        self.notifier.status(self._drain_text)
        with self._lock:
            self.state.drain_progress = {"notice": plan.notice_id, "gone": gone, "total": total,
                                         "deadline": iso(deadline)}

    def _save(self) -> None:
        with self._lock:
            self.store.save(self.state)

    def _log_once(self, key: str, text: str, level: int) -> None:
        if self._error_seen.get(key) != text:
            self._error_seen[key] = text
            log.log(level, "%s", text)

    def _forget_error(self, key: str) -> None:
        self._error_seen.pop(key, None)


class _Hooks:
    def __init__(self, agent: Agent, plan: Plan):
        self.agent = agent
        self.plan = plan

    def checkpoint(self) -> None:
        self.agent._save()

    def progress(self, gone: int, total: int, deadline: datetime) -> None:
        self.agent.drain_progress(self.plan, gone, total, deadline)

    def should_stop(self) -> bool:
        return self.agent._stop.is_set()

    def step(self, record: NoticeRecord, reason: str, message: str) -> None:
        for reporter in self.agent.reporters:
            _quietly(reporter.step, record, reason, message)


def _finished(record: NoticeRecord) -> bool:
    return record.response == "cordon" and record.cordoned or record.drain_finished is not None


def _known(value: Optional[bool]) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _quietly(function: Callable[..., object], *args: object) -> None:
    try:
        function(*args)
    except Exception as error:
        log.warning("reporter %s failed: %s", getattr(function, "__qualname__", function), error)


def _pid() -> int:
    import os

    return os.getpid()


def _handled_by(record: NoticeRecord) -> float:
    """When the notice was handled, at the latest. A record rebuilt from the node's labels has no
    handled time, but nothing is ever done after a deadline, so its deadline bounds it."""
    if record.handled_at is not None:
        return record.handled_at
    deadline = notice_parsers.parse_optional_rfc3339(record.deadline)
    return deadline.timestamp() if deadline is not None else float("inf")


def _boot_time() -> float:
    """Wall-clock time of boot. CLOCK_BOOTTIME, not /proc/uptime: the unit's ProcSubset=pid hides it."""
    try:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return 0.0


def _imds_options(settings: Settings):
    from nodeagent.imds import ImdsOptions

    return ImdsOptions(base_url=settings.imds_url, allow_v1=settings.imds_allow_v1)
