"""The daemon's shell: signals, sd_notify, the poll loop, and handing decisions on.

    poll (poll.py) -> decide (decide.py, pure) -> notice store (notice_store.py) + worker (respond.py)
    worker / lifecycle hook -> reports -> decide -> notice store

The loop decides nothing itself. It polls IMDS, asks the decision core what the answer means,
and applies each action: record changes go to the notice store, Kubernetes changes to the
worker thread, log lines and reports out. The worker and the lifecycle hook report what they did
through a queue that the loop drains, so the loop is the one writer of records. Time comes from
one injectable clock.

Why one module of this size: it has one job, the loop, and what makes it long is that every
kind of action and report has its own short method to apply it; the rules are decide.py's, the
records notice_store.py's, the Kubernetes work respond.py's, the polling pace pacing.py's, and
what is left here is the order in which they are called, which reads best in one place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from nodeagent import decide, pacing
from nodeagent.clock import Clock, SystemClock, iso_seconds
from nodeagent.config import Settings, restart_only_changes
from nodeagent.cycles import PeriodicCollection
from nodeagent.decide import StateLoss
from nodeagent.decide_terms import (
    Absence,
    Accept,
    Action,
    Cancel,
    Close,
    Context,
    Expire,
    Forget,
    KeepOpen,
    KubernetesReady,
    LifecycleTold,
    Plan,
    PollResult,
    Reopen,
    Report,
    ResponseEnded,
    ResponseStarted,
    Resume,
    Say,
    StopEarly,
    Supersede,
    Uncordon,
    UncordonDone,
    UncordonFailed,
    UncordonJob,
)
from nodeagent.imds import ImdsClient, ImdsError, ImdsOptions
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.log_once import LogOnce
from nodeagent.notice_store import NoticeStore
from nodeagent.notices import SOURCES, SOURCES_BY_KIND
from nodeagent.notify import SystemdNotifier
from nodeagent.poll import poll_once
from nodeagent.ports import Notifier, Reporter, Responder, quietly
from nodeagent.respond import ResponseWorker
from nodeagent.state import CANCELLED, AgentState, StateStore

if TYPE_CHECKING:
    from nodeagent.lifecycle_hook import LifecycleHook

log = logging.getLogger("nodeagent.agent")

STOPPED_LABEL_TIMEOUT_S = 2.0
STATUS_POLL_TIME_S = 10.0


class Agent:
    def __init__(
        self,
        settings: Settings,
        responder: Responder,
        *,
        imds: ImdsClient | None = None,
        state_file: StateStore | None = None,
        notifier: Notifier | None = None,
        reporters: Sequence[Reporter] = (),
        reload_settings: Callable[[], Settings] | None = None,
        rebuild_reporters: Callable[[Settings, Sequence[Reporter]], Sequence[Reporter]] | None = None,
        boot_time: float | None = None,
        label_stopped: bool = False,
        clock: Clock | None = None,
    ):
        self.settings = settings
        self.responder = responder
        self.clock: Clock = clock or SystemClock()
        self._collections = PeriodicCollection(self.clock.monotonic)
        self.imds = imds or ImdsClient(_imds_options(settings))
        self.state_file = state_file or StateStore(settings.state_dir)
        self.store = NoticeStore(self.state_file)
        self.notifier: Notifier = notifier or SystemdNotifier()
        self.reporters = list(reporters)
        self.reload_settings = reload_settings
        self.rebuild_reporters = rebuild_reporters
        self.label_stopped = label_stopped  # the service: yes; a drill or the demo must not
        self._retiring: list[threading.Thread] = []
        self.boot_time = boot_time if boot_time is not None else _boot_time()
        self.identity: InstanceIdentity | None = None
        self.last_poll_at: float | None = None
        self.poll_errors = 0
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
        # What the worker and the lifecycle hook did, for the loop to apply (it alone writes records).
        self._reports: queue.SimpleQueue[Report] = queue.SimpleQueue()
        self._in_flight: Counter[str] = Counter()  # responses handed to the worker, not yet ended
        self._failed_uncordons: dict[str, UncordonFailed] = {}  # for the core to decide again
        self._cancel_unreported: set[str] = set()  # cancelled; reported once no response is in flight
        self.lifecycle = _lifecycle_hook(
            settings,
            self.store,
            self.clock,
            self._stop,
            lambda: self.reporters,
            self._report,
            lambda: self.settings.dry_run,
        )
        self.worker = ResponseWorker(
            self.store,
            responder,
            clock=self.clock,
            reporters=lambda: self.reporters,
            stop=self._stop,
            on_status=self.notifier.status,
            report=self._report,
            lifecycle=self.lifecycle,
        )
        self._absences: dict[str, Absence] = {}
        self._once = LogOnce(log)
        # The state file was lost (corrupt) or missing: the node's labels are read before acting.
        self._state_loss = StateLoss.NONE
        self._spot_label: bool | None = None  # from the worker's KubernetesReady report
        self._last_polled: dict[str, float] = {}  # IMDS path -> monotonic time of its last poll
        self._watch_cache: tuple[Settings, _Watch] | None = None
        self._next_poll_at = 0.0
        self._status_base, self._status_stamped_at, self._status_poll_time = "", 0.0, ""

    # ---------------------------------------------------------------- views for the CLI tools

    @property
    def state(self) -> AgentState:
        return self.store.snapshot()

    @property
    def responder_ready(self) -> bool:
        return self.worker.ready

    # ---------------------------------------------------------------- lifecycle

    def request_stop(self, *_: object) -> None:
        self._stop_requested = True
        self._poke()

    def request_reload(self, *_: object) -> None:
        self._reload_requested = True
        self._poke()

    def _poke(self) -> None:
        # The buffer is full: the loop has wake-ups pending already.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)

    def run(self) -> int:
        if not self.start():
            return self.shutdown()
        while not self._stop.is_set():
            self.tick()
            self._collections.tick()
            self.notifier.watchdog()
            self._sleep_until(self._next_poll_at)
            if self._reload_requested:
                self._apply_reload()
        return self.shutdown()

    def start(self) -> bool:
        """Load the state, wait for IMDS, start the worker, say READY. False when stopped first."""
        self._load_state()
        if not self._wait_for_imds():
            return False
        self.worker.start(self.identity, held=self._state_loss != StateLoss.NONE)
        self.notifier.ready()
        log.info("ready: watching IMDS at %s (%s)", self.settings.imds_url, self._pace_text())
        return True

    def tick(self) -> None:
        self.apply_reports()
        result = self.poll()
        holding = decide.holding_notices(self._state_loss, self.worker.startup_failures)
        if result.answered and holding:
            # Acting now could repeat a response the lost state file knew about: the node's
            # labels say, once the API can be read.
            if result.notices:
                self._once.say(
                    "rebuild",
                    f"{self._state_loss.value}: holding notices until the node's own labels can be read "
                    "from the API",
                    logging.WARNING,
                )
        elif result.answered:
            decision = decide.decide_poll(
                self.store.records(), result, self._absences, self.settings, self._context()
            )
            self._absences = dict(decision.absences)
            self._apply(decision.actions)
        self.apply_reports()
        self._update_status()

    def shutdown(self) -> int:
        self.notifier.stopping()
        self._stop.set()
        busy = self.worker.running is not None
        log.info("stopping%s", ": drain interrupted, it resumes on the next start" if busy else "")
        # A response gets time to record how far it got; a startup or a label write stuck on a
        # hung API has nothing to save and must not hold the stop.
        self.worker.join(timeout_s=10 if busy else 2)
        self.apply_reports()
        if self.label_stopped and not busy and self.worker.ready and self.store.agent_state == "watching":
            # A clean stop while idle: the fleet view must not show the node as guarded. One
            # quick attempt; the next start writes "watching" again.
            quietly(self.responder.agent_state_changed, "stopped", STOPPED_LABEL_TIMEOUT_S)
        self.store.set_status("stopped")
        for reporter in self.reporters:
            quietly(reporter.close)
        for closer in self._retiring:
            closer.join(timeout=5)
        self.responder.close()
        self.imds.close()
        self._wake_reader.close()
        self._wake_writer.close()
        return 0

    def _sleep_until(self, deadline: float) -> None:
        remaining = deadline - self.clock.monotonic()
        readable = select.select([self._wake_reader], [], [], max(0.0, remaining))[0]
        if readable:
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
                log.warning(
                    "reload: %s changed; that takes effect on the next restart (systemctl restart nodeagent)",
                    ", ".join(pending),
                )
            if _imds_options(new_settings) != _imds_options(self.settings):
                self.imds.close()
                self.imds = ImdsClient(_imds_options(new_settings))
            self.settings = new_settings
            self.responder.reload(new_settings)
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
            closer = threading.Thread(target=_close_all, args=(retired,), name="reporter-close", daemon=True)
            closer.start()
            self._retiring = [t for t in self._retiring if t.is_alive()] + [closer]

    # ---------------------------------------------------------------- startup

    def _load_state(self) -> None:
        loaded = self.state_file.load()
        if loaded.error:
            where = f"; moved aside to {loaded.quarantined}" if loaded.quarantined else ""
            log.warning("state: %s%s; rebuilding from the node's own labels", loaded.error, where)
            self._state_loss = StateLoss.CORRUPT
        elif loaded.missing:
            # Usually a first start; but a wiped state directory must not forget a drain the
            # node's labels say was under way. Notices wait until the node's labels have been
            # read, as for a corrupt file.
            self._state_loss = StateLoss.MISSING
        loaded.state.pid = os.getpid()
        self.store.load(loaded.state)
        self._apply(decide.decide_start(self.store.records(), self.settings, self._context()))

    def _wait_for_imds(self) -> bool:
        while not self._stop.is_set():
            try:
                self.identity = self.imds.identity()
                return True
            except ImdsError as error:
                text = f"waiting for IMDS at {self.settings.imds_url}: {error}"
                self._once.say("imds-start", text, logging.WARNING)
                self.notifier.status(text)
            self.notifier.watchdog()
            self._sleep_until(self.clock.monotonic() + min(5.0, max(1.0, self.settings.poll_interval)))
            if self._reload_requested:
                self._apply_reload()
        return False

    def _after_responder_ready(self) -> None:
        if self._state_loss != StateLoss.NONE:
            found = self.responder.notice_on_node()
            if found is not None:
                if self._state_loss == StateLoss.MISSING:
                    log.warning("state: no state file, but the node's labels name notice %s", found.id)
                self._apply(decide.decide_adopt(found, self.store.records(), self.settings, self._context()))
            elif self._state_loss == StateLoss.CORRUPT:
                log.info("state rebuilt from the node's labels: no notice in progress on it")
            self._state_loss = StateLoss.NONE
        self.worker.release()

    def _context(self) -> Context:
        life_cycle = self.identity.life_cycle if self.identity is not None else None
        return Context(
            now=self.clock.now(),
            running=self.worker.running,
            spot_label=self._spot_label,
            imds_life_cycle=life_cycle,
            boot_time=self.boot_time,
            failed_uncordons=dict(self._failed_uncordons),
        )

    # ---------------------------------------------------------------- polling

    def _watch(self) -> _Watch:
        """What the settings say to watch, worked out once per settings object (a reload swaps it)."""
        if self._watch_cache is None or self._watch_cache[0] is not self.settings:
            self._watch_cache = (self.settings, _watch_for(self.settings))
        return self._watch_cache[1]

    def _watched_kinds(self) -> tuple[str, ...]:
        return self._watch().kinds

    def _intervals(self) -> Mapping[str, float]:
        """Each watched path's own poll interval (pacing.py says why they differ)."""
        return self._watch().intervals

    def _pace_text(self) -> str:
        paths = {source.path: source.kind.value for source in SOURCES}
        return ", ".join(f"{paths[path]} every {every:g}s" for path, every in self._intervals().items())

    def _hot_paths(self) -> frozenset[str]:
        """Paths polled at the fast pace (decide.hot_kinds says which)."""
        kinds = decide.hot_kinds(self.store.records(), self._state_loss)
        return frozenset(SOURCES_BY_KIND[kind].path for kind in kinds if kind in SOURCES_BY_KIND)

    def poll(self) -> PollResult:
        intervals = self._intervals()
        if not intervals:  # every kind ignored: nothing to watch, but stay alive and reloadable
            self._next_poll_at = self.clock.monotonic() + self.settings.poll_interval
            return PollResult({}, frozenset(), {})
        hot = self._hot_paths()
        now = self.clock.monotonic()
        due = pacing.plan_polls(now, self._last_polled, intervals, hot, self.settings.poll_interval).due
        kinds = [source.kind.value for source in SOURCES if source.path in due]
        result = poll_once(self.imds, kinds, self.clock.now())
        self.last_poll_at = self.clock.monotonic()
        tried = set(result.answered) | set(dict(result.errors))
        skipped = set()
        for kind in kinds:
            path = SOURCES_BY_KIND[kind].path
            if kind in tried:
                self._last_polled[path] = now
            else:  # IMDS proved unreachable before its turn: it stays due, tried again later
                skipped.add(path)
        # `hot` still holds: the records change only once this poll's decisions are applied.
        self._next_poll_at = pacing.next_poll_at(
            self.last_poll_at, self._last_polled, intervals, hot, self.settings.poll_interval, skipped
        )
        errors = dict(result.errors)
        if errors:
            self.poll_errors += len(errors)
            for kind, text in errors.items():
                self._once.say(f"poll-{kind}", f"IMDS poll ({kind}): {text}", logging.WARNING)
        else:
            for key in self._once.said("poll-"):
                log.info("IMDS poll recovered (%s)", key[len("poll-") :])
                self._once.clear(key)
        for reporter in self.reporters:
            quietly(reporter.polled, not errors, errors)
        return result

    # ---------------------------------------------------------------- applying decisions

    def _apply(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Say):
                self._once.say(action.key, action.text, action.level)
            elif isinstance(action, Accept):
                self._accept(action)
            elif isinstance(action, Supersede):
                if self.store.supersede(action.notice_id, action.by):
                    log.warning(
                        "notice %s: superseded by %s, whose deadline comes first; its response stops",
                        action.notice_id,
                        action.by,
                    )
                    self.worker.cancel(action.notice_id, f"superseded by {action.by}")
            elif isinstance(action, Cancel):
                self._cancel(action)
            elif isinstance(action, Uncordon):
                self._uncordon(action)
            elif isinstance(action, Resume):
                self._submit(action.plan)
            elif isinstance(action, Reopen):
                if self.store.reopen(action.plan.notice_id):
                    log.warning(
                        "notice %s: the notice that superseded it was cancelled; its response resumes",
                        action.plan.notice_id,
                    )
                    self._submit(action.plan)
            elif isinstance(action, Expire):
                log.error("%s", action.message)
                self.store.expire(action.notice_id, action.reason)
            elif isinstance(action, Close):
                self.store.progress(action.progress)
                final = self.store.mark_done(action.notice_id, action.progress.outcome, action.handled_at)
                for reporter in self.reporters:
                    quietly(reporter.finished, final)
            elif isinstance(action, StopEarly):
                final = self.store.stopped_early(action.notice_id, action.progress)
                log.warning("notice %s: response stopped (%s)", action.notice_id, final.outcome)
            elif isinstance(action, KeepOpen):
                self.store.interrupted(action.progress)
            elif isinstance(action, Forget):
                self.store.forget(action.notice_ids)
                for notice_id in action.notice_ids:
                    self._failed_uncordons.pop(notice_id, None)
                    for key in decide.said_keys(notice_id):
                        self._once.clear(key)
                for reporter in self.reporters:
                    quietly(reporter.forgotten, action.notice_ids)

    def _accept(self, action: Accept) -> None:
        self.store.accept(action.record)
        log.warning("%s", action.message)
        if action.notice.raw:  # a notice from IMDS, not one rebuilt from the node's labels
            for reporter in self.reporters:
                quietly(reporter.notice_received, action.notice, action.record, action.plan)
        if action.plan is not None:
            if not self.worker.ready:
                log.warning(
                    "notice %s: Kubernetes not ready yet (%s); acting as soon as it is",
                    action.record.id,
                    self.worker.startup_status,
                )
            self._submit(action.plan)

    def _submit(self, plan: Plan) -> None:
        self._in_flight[plan.notice_id] += 1
        self.worker.submit(plan)

    def _cancel(self, action: Cancel) -> None:
        log.warning("notice %s cancelled: %s", action.notice_id, action.reason)
        self.store.cancel(action.notice_id, action.reason)
        self.worker.cancel(action.notice_id, action.reason)
        if action.undo:
            self._submit_uncordon(action.notice_id, action.reason)
        # Reported once its response (if one was handed to the worker) has ended, with how far it got.
        self._cancel_unreported.add(action.notice_id)
        self._report_cancel_when_settled(action.notice_id)

    def _uncordon(self, action: Uncordon) -> None:
        if action.keep:  # another notice holds the node: only the record lets go
            log.info("notice %s: keeping the node cordoned for %s", action.notice_id, action.held_by)
            self._failed_uncordons.pop(action.notice_id, None)
            self.store.uncordoned(action.notice_id, action.reason, done=False)
            return
        self._submit_uncordon(action.notice_id, action.reason)

    def _submit_uncordon(self, notice_id: str, reason: str) -> None:
        """Record the uncordon as pending and hand it to the worker; a failure it reports is
        kept for the core to decide again."""
        self._failed_uncordons.pop(notice_id, None)
        self.store.request_uncordon(notice_id)
        self.worker.submit(UncordonJob(notice_id, reason))

    def _report_cancel_when_settled(self, notice_id: str) -> None:
        if notice_id not in self._cancel_unreported or self._in_flight[notice_id] > 0:
            return
        self._cancel_unreported.discard(notice_id)
        record = self.store.get(notice_id)
        if record.phase == CANCELLED:
            for reporter in self.reporters:
                quietly(reporter.cancelled, record)

    # ---------------------------------------------------------------- reports from the threads

    def _report(self, report: Report) -> None:
        """Called on the worker's and the lifecycle hook's threads: queued, and the loop woken."""
        self._reports.put(report)
        self._poke()

    def apply_reports(self) -> None:
        """Apply what the worker and the lifecycle hook reported (the loop's thread only)."""
        while True:
            try:
                report = self._reports.get_nowait()
            except queue.Empty:
                return
            if isinstance(report, KubernetesReady):
                self._spot_label = report.spot_label
                self._after_responder_ready()
            elif isinstance(report, ResponseStarted):
                self.store.start(report.notice_id)
            elif isinstance(report, ResponseEnded):
                self._in_flight[report.notice_id] -= 1
                if self._in_flight[report.notice_id] <= 0:
                    del self._in_flight[report.notice_id]
                self._apply(decide.response_ended(self.store.get(report.notice_id), report))
                self._report_cancel_when_settled(report.notice_id)
                if self.lifecycle is not None:  # the response is over: the instance may be released now
                    self.lifecycle.poke()
            elif isinstance(report, UncordonFailed):
                self._failed_uncordons[report.notice_id] = report
            elif isinstance(report, UncordonDone):
                self._failed_uncordons.pop(report.notice_id, None)
                record = self.store.get(report.notice_id)
                self.store.uncordoned(report.notice_id, report.reason, done=True)
                for reporter in self.reporters:
                    quietly(reporter.step, record, "Uncordoned", f"uncordoned: {report.reason}")
            elif isinstance(report, LifecycleTold):
                self.store.lifecycle(report.notice_id, **report.fields)

    # ---------------------------------------------------------------- reporting

    def _update_status(self) -> None:
        poll_errors = list(self._once.said("poll-").values())
        if self.worker.drain_text:
            text = self.worker.drain_text
        elif not self.worker.ready:
            text = self.worker.startup_status
        elif poll_errors:
            text = f"{poll_errors[0]}; {self.responder.describe()}"
        else:
            text = f"watching IMDS ({self._watch().kinds_text}); {self.responder.describe()}"
            if self.store.agent_state != "watching":
                text += f"; node {self.store.agent_state}"
            # The poll time is refreshed every STATUS_POLL_TIME_S, not on each poll: each STATUS is
            # a datagram, and an idle daemon's cost is mostly its wake-ups and system calls.
            now = self.clock.monotonic()
            if text != self._status_base or now - self._status_stamped_at >= STATUS_POLL_TIME_S:
                self._status_base, self._status_stamped_at = text, now
                self._status_poll_time = iso_seconds(self.clock.now())
            self.notifier.status(f"{text}; last poll {self._status_poll_time}")
            self.store.set_status(text)
            return
        self.notifier.status(text)
        self.store.set_status(text)


@dataclass(frozen=True)
class _Watch:
    """The notice kinds the settings watch (not `ignore`), in SOURCES order, and each one's path
    with its own poll interval."""

    kinds: tuple[str, ...]
    kinds_text: str
    intervals: Mapping[str, float]


def _watch_for(settings: Settings) -> _Watch:
    kinds = tuple(s.kind.value for s in SOURCES if decide.response_for(settings, s.kind.value) != "ignore")
    every = pacing.path_intervals(
        settings.poll_interval,
        settings.poll_interval_rebalance,
        settings.poll_interval_scheduled,
        settings.poll_interval_asg,
    )
    paths = [SOURCES_BY_KIND[kind].path for kind in kinds]
    return _Watch(kinds, ", ".join(kinds), {path: every[path] for path in paths})


def _boot_time() -> float:
    """Wall-clock time of boot. CLOCK_BOOTTIME, not /proc/uptime: the unit's ProcSubset=pid hides it."""
    try:
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    except (AttributeError, OSError):
        return 0.0


def _lifecycle_hook(
    settings: Settings,
    store: NoticeStore,
    clock: Clock,
    stop: threading.Event,
    reporters: Callable[[], Sequence[Reporter]],
    report: Callable[[LifecycleTold], None],
    dry_run: Callable[[], bool] | None = None,
) -> LifecycleHook | None:
    """ASG_LIFECYCLE_HOOK set: the thread that heartbeats and completes it (nodeagent/lifecycle_hook.py)."""
    if not settings.asg_lifecycle_hook:
        return None
    # Imported only when a hook is configured: the AWS client (SigV4 signing, XML parsing) is
    # about 0.4 MiB of RSS that every other node would carry for nothing.
    from nodeagent.lifecycle_hook import LifecycleHook

    return LifecycleHook(
        settings,
        store,
        clock=clock,
        stop=stop,
        reporters=reporters,
        report=report,
        imds_factory=lambda: ImdsClient(_imds_options(settings)),
        dry_run=dry_run,
    )


def _imds_options(settings: Settings) -> ImdsOptions:
    return ImdsOptions(base_url=settings.imds_url, allow_v1=settings.imds_allow_v1)


def _close_all(reporters: Sequence[Reporter]) -> None:
    for reporter in reporters:
        quietly(reporter.close)
