"""The worker: one thread that carries out what the decision core decided, in order.

It brings the Kubernetes side up (off the poll loop, so a hung credential plugin never delays
READY or stops the polling), then runs jobs: a response to a notice (cordon, drain) or an
uncordon. Each running response carries a cancellation token that the drain checks before every
eviction, delete, retry and label write. All Kubernetes writes happen on this one thread, so an
uncordon can never race a response that is still labelling the node.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Union

from nodeagent.clock import Clock, iso
from nodeagent.decide import Plan, expired_before_start, held_by_other
from nodeagent.errors import ExpectedFailure
from nodeagent.imds import InstanceIdentity
from nodeagent.notice_store import NoticeStore, working_copy
from nodeagent.ports import Reporter, Responder, quietly
from nodeagent.state import CANCELLED, SUPERSEDED, NoticeRecord

if TYPE_CHECKING:  # imported at run time only when a hook is configured (agent.py)
    from nodeagent.lifecycle_hook import LifecycleHook

log = logging.getLogger("nodeagent.agent")

STARTUP_RETRY_S = (1.0, 5.0)
IDLE_WAIT_S = 30.0  # first and longest wait between Kubernetes startup attempts


class CancelToken:
    """Set once, by the poll loop; read by the drain's threads."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@dataclass(frozen=True)
class UncordonJob:
    notice_id: str
    reason: str
    keep: bool


Job = Union[Plan, UncordonJob]


class Worker:
    def __init__(
        self,
        store: NoticeStore,
        responder: Responder,
        *,
        clock: Clock,
        reporters: Callable[[], Sequence[Reporter]],
        stop: threading.Event,
        on_status: Callable[[str], None],
        on_ready: Callable[[], None] = lambda: None,
        lifecycle: LifecycleHook | None = None,
    ):
        self.store = store
        self.responder = responder
        self.clock = clock
        self.reporters = reporters
        self.stop = stop
        self.on_status = on_status
        self.on_ready = on_ready  # wakes the poll loop, which then reads the node (lost state) at once
        self.lifecycle = lifecycle  # ASG_LIFECYCLE_HOOK: told when a response ends (it completes the hook)
        self.identity: InstanceIdentity | None = None
        self.ready = False
        self.startup_status = "starting"
        self.startup_failures = 0
        self.drain_text: str | None = None
        self._jobs: list[Job] = []
        self._held = False
        self._cond = threading.Condition()
        self._running: str | None = None
        self._picking = False  # a job taken off the list and not yet finished
        self._token: CancelToken | None = None
        self._finish_lock = threading.Lock()  # a cancel and the end of a response never interleave
        self._thread = threading.Thread(target=self._run, name="responder", daemon=True)

    # ------------------------------------------------------------ the poll loop's side

    def start(self, identity: InstanceIdentity | None, *, held: bool = False) -> None:
        """held: take no job until release() (the poll loop first reads the node's labels when
        the state file was lost, so a queued response is not started twice)."""
        self.identity = identity
        self._held = held
        self._thread.start()
        if self.lifecycle is not None:  # a record left pending by the last run is completed now
            self.lifecycle.start(identity)

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()

    @property
    def running(self) -> str | None:
        return self._running

    @property
    def idle(self) -> bool:
        """No job waiting or running (the fast tests wait for this between steps)."""
        with self._cond:
            return not self._jobs and self._running is None and not self._picking

    def submit(self, job: Job) -> None:
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()

    def cancel(self, notice_id: str, reason: str, *, superseded_by: str | None = None) -> bool:
        """Record the cancel (or supersede) and stop the response if it is running. True when
        it was running: it then reports the outcome itself once it has stopped."""
        with self._finish_lock:
            if superseded_by is not None:
                if not self.store.supersede(notice_id, superseded_by):
                    return False
            else:
                self.store.cancel(notice_id, reason)
            if self._running == notice_id and self._token is not None:
                self._token.cancel(reason)
                return True
            return False

    def join(self, timeout_s: float) -> None:
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)
        if self.lifecycle is not None:  # a call in flight finishes and is recorded
            self.lifecycle.join(min(timeout_s, 5.0))

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        wait = STARTUP_RETRY_S[0]
        while not self.stop.is_set() and not self.ready:
            if self._startup():
                break
            self.clock.wait(self.stop, wait)
            wait = min(STARTUP_RETRY_S[1], wait * 2)
        while not self.stop.is_set():
            job = self._next_job()
            if job is None:
                continue
            try:
                if isinstance(job, Plan):
                    if self.lifecycle is not None:  # a hold to heartbeat may begin
                        self.lifecycle.poke()
                    self._respond(job)
                else:
                    self._uncordon(job)
            finally:
                with self._cond:
                    self._picking = False
                if self.lifecycle is not None:  # the node may be empty now: release the instance
                    self.lifecycle.poke()

    def _startup(self) -> bool:
        try:
            waiting_for = self.responder.startup(self.identity)
        except Exception as error:  # the responder reports its own errors; never die here
            waiting_for = f"Kubernetes not ready: {error}"
            log.warning("%s", waiting_for)
        if waiting_for is not None:
            self.startup_status = waiting_for
            self.startup_failures += 1
            return False
        self.ready = True
        # The startup wrote "watching"; a response resumed after a restart says otherwise.
        quietly(self.responder.agent_state_changed, self.store.agent_state)
        log.info("ready to respond (%s)", self.responder.describe())
        self.on_ready()
        return True

    def _next_job(self) -> Job | None:
        with self._cond:
            if not self._jobs or self._held:
                # Woken by submit, release and join; the timeout is only a backstop (an idle
                # thread that wakes twice a second is CPU for nothing on every node).
                self._cond.wait(timeout=IDLE_WAIT_S)
            if not self._jobs or self._held or self.stop.is_set():
                return None
            # Uncordons first (each re-checks that no other notice holds the node), then the most
            # urgent response.
            undo = next((job for job in self._jobs if isinstance(job, UncordonJob)), None)
            job: Job = (
                undo
                if undo is not None
                else min((job for job in self._jobs if isinstance(job, Plan)), key=lambda p: p.deadline)
            )
            self._jobs.remove(job)
            self._picking = True
            return job

    def _respond(self, plan: Plan) -> None:
        with self._finish_lock:
            record = self.store.get(plan.notice_id)
            if record.phase not in ("seen", "acting"):
                return
            if expired_before_start(plan, self.clock.now()):
                self.store.expire(plan.notice_id, "deadline passed before the response could start")
                log.error(
                    "notice %s: its deadline %s passed before Kubernetes was ready; not acting",
                    plan.notice_id,
                    iso(plan.deadline),
                )
                return
            self.store.start(plan.notice_id)
            token = CancelToken()
            self._running, self._token = plan.notice_id, token
        if plan.resume:
            log.info(
                "resuming %s for %s (deadline in %.0fs)",
                plan.response,
                plan.notice_id,
                (plan.deadline - self.clock.now()).total_seconds(),
            )
        self._set_agent_state("draining" if plan.response == "drain" else "cordoning")
        working = working_copy(self.store.get(plan.notice_id))
        hooks = _Hooks(self, plan, working, token)
        try:
            self.responder.execute(plan, working, hooks)
        except Exception as error:
            if hooks.should_stop():
                log.info("notice %s: %s", plan.notice_id, error)
            else:
                log.error(
                    "notice %s: response failed: %s",
                    plan.notice_id,
                    error,
                    exc_info=not isinstance(error, ExpectedFailure),
                )
                working.outcome = f"failed: {error}"
        finished_state = "drained" if plan.response == "drain" else "cordoned"
        ended_on_its_own = not hooks.should_stop()  # finished, failed, or at its deadline
        if ended_on_its_own:
            # Said before the phase flips, so whoever watches the state sees the line first. The
            # node's label is written before the record is closed: a kill in between leaves the
            # notice open, and the next start finds nothing left to do instead of a stale label.
            log.info("notice %s: %s", plan.notice_id, working.outcome or "done")
            if self.clock.now() < plan.deadline:
                self._set_agent_state(finished_state)
            else:  # a drain that ran to its deadline: record it, but write nothing more to the node
                self.store.set_agent_state(finished_state)
        with self._finish_lock:
            self._running, self._token = None, None
            self.drain_text = None
            stored = self.store.get(plan.notice_id)
            if token.cancelled or stored.phase in (CANCELLED, SUPERSEDED):
                final = self.store.stopped_early(plan.notice_id, working)
                log.warning("notice %s: response stopped (%s)", plan.notice_id, final.outcome)
                if final.phase == CANCELLED:
                    for reporter in self.reporters():
                        quietly(reporter.cancelled, final)
                return
            if not ended_on_its_own and not _finished(working):
                self.store.interrupted(working)  # stays acting: the next start resumes it
                return
            self.store.progress(working)
            final = self.store.mark_done(plan.notice_id, working.outcome, time.time())
        for reporter in self.reporters():
            quietly(reporter.finished, final)

    def _uncordon(self, job: UncordonJob) -> None:
        record = self.store.get(job.notice_id)
        other = held_by_other(self.store.records(), job.notice_id)
        if job.keep or other is not None:
            log.info("notice %s: keeping the node cordoned for %s", job.notice_id, other or "another notice")
            self.store.uncordoned(job.notice_id, job.reason, done=False)
            return
        try:
            self.responder.undo(record, job.reason)
        except Exception as error:
            log.error("notice %s: could not undo (%s); the node may stay cordoned", record.id, error)
            return  # stays pending: the next start tries again
        self.store.uncordoned(job.notice_id, job.reason, done=True)
        self._set_agent_state("watching")
        for reporter in self.reporters():
            quietly(reporter.step, record, "Uncordoned", f"uncordoned: {job.reason}")

    def _set_agent_state(self, agent_state: str) -> None:
        if self.store.set_agent_state(agent_state) and self.ready:
            quietly(self.responder.agent_state_changed, agent_state)

    def progress(self, plan: Plan, gone: int, total: int, deadline: datetime) -> None:
        left = max(0.0, (deadline - self.clock.now()).total_seconds())
        self.drain_text = f"draining: {gone}/{total} pods gone, deadline in {left:.0f}s"
        self.on_status(self.drain_text)
        self.store.set_drain_progress(
            {"notice": plan.notice_id, "gone": gone, "total": total, "deadline": iso(deadline)}
        )


class _Hooks:
    """What a response may ask of the agent while it runs."""

    def __init__(self, worker: Worker, plan: Plan, working: NoticeRecord, token: CancelToken):
        self.worker = worker
        self.plan = plan
        self.working = working
        self.token = token

    def checkpoint(self) -> None:
        self.worker.store.progress(self.working)

    def progress(self, gone: int, total: int, deadline: datetime) -> None:
        self.worker.progress(self.plan, gone, total, deadline)

    def should_stop(self) -> bool:
        return self.token.cancelled or self.worker.stop.is_set()

    def step(self, record: NoticeRecord, reason: str, message: str) -> None:
        if self.token.cancelled:
            return  # a cancelled response has nothing more to announce
        for reporter in self.worker.reporters():
            quietly(reporter.step, record, reason, message)


def _finished(record: NoticeRecord) -> bool:
    return (record.response == "cordon" and record.cordoned) or record.drain_finished is not None
