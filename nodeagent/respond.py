"""The worker: one thread that carries out what the decision core decided, in order.

It brings the Kubernetes side up (off the poll loop, so a hung credential plugin never delays
READY or stops the polling), then runs jobs: a response to a notice (cordon, drain) or an
uncordon. Each response carries a cancellation token that the drain checks before every
eviction, delete, retry and label write. All Kubernetes writes happen on this one thread, so an
uncordon can never race a response that is still labelling the node.

The worker decides nothing about a record: it reports what happened (a response started, ended
and why, an uncordon done) and the poll loop applies what the decision core makes of it. It only
saves a running response's progress (notice_store.checkpoint) before its next write.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from nodeagent.clock import Clock, iso
from nodeagent.decide import expired_before_start, next_job
from nodeagent.decide_terms import (
    Ending,
    Job,
    KubernetesReady,
    Plan,
    Report,
    ResponseEnded,
    ResponseStarted,
    UncordonDone,
    UncordonFailed,
    UncordonJob,
)
from nodeagent.errors import ExpectedFailure
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.notice_store import NoticeStore, working_copy
from nodeagent.ports import Reporter, Responder, quietly
from nodeagent.state import NoticeRecord

if TYPE_CHECKING:  # imported at run time only when a hook is configured (agent.py)
    from nodeagent.lifecycle_hook import LifecycleHook

log = logging.getLogger("nodeagent.agent")

STARTUP_RETRY_S = (1.0, 5.0)
IDLE_WAIT_S = 30.0  # first and longest wait between Kubernetes startup attempts


class CancelToken:
    """One per response handed to the worker. Set once, by the poll loop; read by the drain's threads."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str) -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


class ResponseWorker:
    def __init__(
        self,
        store: NoticeStore,
        responder: Responder,
        *,
        clock: Clock,
        reporters: Callable[[], Sequence[Reporter]],
        stop: threading.Event,
        on_status: Callable[[str], None],
        report: Callable[[Report], None],
        lifecycle: LifecycleHook | None = None,
    ):
        self.store = store
        self.responder = responder
        self.clock = clock
        self.reporters = reporters
        self.stop = stop
        self.on_status = on_status
        self.report = report  # to the poll loop, which applies it (and is woken by it)
        # ASG_LIFECYCLE_HOOK: poked when a response begins (the loop pokes it once the end is recorded)
        self.lifecycle = lifecycle
        self.identity: InstanceIdentity | None = None
        self.ready = False
        self.startup_status = "starting"
        self.startup_failures = 0
        self.drain_text: str | None = None
        self._jobs: list[tuple[Job, CancelToken]] = []
        self._held = False
        self._cond = threading.Condition()
        self._running: str | None = None
        self._current: tuple[Job, CancelToken] | None = None  # taken off the list, not finished yet
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
            return not self._jobs and self._current is None

    def submit(self, job: Job) -> None:
        with self._cond:
            self._jobs.append((job, CancelToken()))
            self._cond.notify_all()

    def cancel(self, notice_id: str, reason: str) -> None:
        """Stop the notice's response: a waiting one is dropped, a running one told to stop.
        Each reports its end."""
        with self._cond:
            dropped = [entry for entry in self._jobs if _response_to(entry[0], notice_id)]
            for entry in dropped:
                self._jobs.remove(entry)
            if self._current is not None and _response_to(self._current[0], notice_id):
                self._current[1].cancel(reason)
        for _ in dropped:
            self.report(ResponseEnded(notice_id, Ending.DROPPED, None, time.time()))

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
            taken = self._next_job()
            if taken is None:
                continue
            job, token = taken
            try:
                if isinstance(job, Plan):
                    if self.lifecycle is not None:  # a hold to heartbeat may begin
                        self.lifecycle.poke()
                    self._respond(job, token)
                else:
                    self._uncordon(job)
            finally:
                with self._cond:
                    self._current = None

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
        self.report(KubernetesReady(spot_label=self.responder.spot_label()))
        return True

    def _next_job(self) -> tuple[Job, CancelToken] | None:
        with self._cond:
            if not self._jobs or self._held:
                # Woken by submit, release and join; the timeout is only a backstop (an idle
                # thread that wakes twice a second is CPU for nothing on every node).
                self._cond.wait(timeout=IDLE_WAIT_S)
            if not self._jobs or self._held or self.stop.is_set():
                return None
            taken = self._jobs.pop(next_job([job for job, _ in self._jobs]))
            self._current = taken
            return taken

    def _respond(self, plan: Plan, token: CancelToken) -> None:
        if token.cancelled:  # cancelled between the pick and now
            self.report(ResponseEnded(plan.notice_id, Ending.DROPPED, None, time.time()))
            return
        if expired_before_start(plan, self.clock.now()):
            self.report(ResponseEnded(plan.notice_id, Ending.LATE, None, time.time()))
            return
        self.report(ResponseStarted(plan.notice_id))
        self._running = plan.notice_id
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
        if token.cancelled:
            ending = Ending.STOPPED
        elif self.stop.is_set():
            ending = Ending.INTERRUPTED
        else:  # finished, failed, or at its deadline
            ending = Ending.FINISHED
            # Said before the record closes, so whoever watches the state sees the line first. The
            # node's label is written before the record is closed: a kill in between leaves the
            # notice open, and the next start finds nothing left to do instead of a stale label.
            log.info("notice %s: %s", plan.notice_id, working.outcome or "done")
            finished_state = "drained" if plan.response == "drain" else "cordoned"
            if self.clock.now() < plan.deadline:
                self._set_agent_state(finished_state)
            else:  # a drain that ran to its deadline: record it, but write nothing more to the node
                self.store.set_agent_state(finished_state)
        self._running = None
        self.drain_text = None
        self.report(ResponseEnded(plan.notice_id, ending, working_copy(working), time.time()))

    def _uncordon(self, job: UncordonJob) -> None:
        record = self.store.get(job.notice_id)
        try:
            self.responder.undo(record, job.reason)
        except Exception as error:
            log.error("notice %s: could not undo (%s); trying again shortly", record.id, error)
            self.report(UncordonFailed(job.notice_id, job.reason, self.clock.now()))
            return  # stays pending: the loop decides it again (and a restart would)
        self._set_agent_state("watching")
        self.report(UncordonDone(job.notice_id, job.reason))

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

    def __init__(self, worker: ResponseWorker, plan: Plan, working: NoticeRecord, token: CancelToken):
        self.worker = worker
        self.plan = plan
        self.working = working
        self.token = token

    def checkpoint(self) -> None:
        self.worker.store.checkpoint(self.working)

    def progress(self, gone: int, total: int, deadline: datetime) -> None:
        self.worker.progress(self.plan, gone, total, deadline)

    def should_stop(self) -> bool:
        return self.token.cancelled or self.worker.stop.is_set()

    def step(self, record: NoticeRecord, reason: str, message: str) -> None:
        if self.token.cancelled:
            return  # a cancelled response has nothing more to announce
        for reporter in self.worker.reporters():
            quietly(reporter.step, record, reason, message)


def _response_to(job: Job, notice_id: str) -> bool:
    return isinstance(job, Plan) and job.notice_id == notice_id
