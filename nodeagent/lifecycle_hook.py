"""Carries out the lifecycle-hook decisions (nodeagent/lifecycle.py) on a thread of its own.

The thread reads the notice store, heartbeats a hold whose drain runs long and completes the
lifecycle action once the node's response is over; every accepted call is reported to the poll
loop, which writes it to the record at once, so a restart neither repeats a completion nor forgets
one. Until the loop has written it, the thread reads its own reports over the store's records.
The worker pokes it when a response starts and the loop once its end is recorded, so the
completion follows the last pod at once (it also looks on its own now and then, and at each
heartbeat's due time). A failed call is retried with backoff (tenacity) and reported if it never
succeeds; nothing here ever waits on, or holds up, a drain.

With DRY_RUN the drain changed nothing, so the pods are still on the node: no call is sent.
Each call that would have been made is logged instead, with what it would have said.

Only built when ASG_LIFECYCLE_HOOK is set; requests-aws4auth is imported with it.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Callable

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from nodeagent import lifecycle
from nodeagent.aws.autoscaling import AutoScalingClient, AutoScalingError
from nodeagent.aws.credentials import InstanceRoleCredentials
from nodeagent.aws.endpoints import autoscaling_endpoint
from nodeagent.clock import Clock, iso
from nodeagent.decide_terms import LifecycleTold
from nodeagent.imds import ImdsClient, ImdsError
from nodeagent.instance_identity import InstanceIdentity
from nodeagent.lifecycle import HookPolicy
from nodeagent.notice_store import NoticeStore
from nodeagent.ports import Reporter, quietly
from nodeagent.state import NoticeRecord

log = logging.getLogger("nodeagent.lifecycle")

GROUP_TAG_PATH = "tags/instance/aws:autoscaling:groupName"
IDLE_LOOK_S = 30.0  # at most; a tenth of the hook's heartbeat timeout when that is shorter
COMPLETE_ATTEMPTS = 8  # about a minute of backoff in all
HEARTBEAT_ATTEMPTS = 4
HEARTBEAT_PAUSE_S = 30.0  # after a heartbeat that failed every attempt, before the next try
RETRY_WAIT_S = (0.5, 10.0)  # first and longest wait between attempts


class _Stopping(Exception):
    """The agent is stopping: leave the record pending, the next start carries on."""


class LifecycleHook:
    def __init__(
        self,
        settings,
        store: NoticeStore,
        *,
        clock: Clock,
        stop: threading.Event,
        reporters: Callable[[], Sequence[Reporter]],
        report: Callable[[LifecycleTold], None],
        imds_factory: Callable[[], ImdsClient],
        client_factory: Callable[..., object] | None = None,
        dry_run: Callable[[], bool] | None = None,
    ):
        self.settings = settings
        self.hook_name = settings.asg_lifecycle_hook
        self.policy = HookPolicy.from_settings(settings)
        self.store = store
        self.clock = clock
        self.stop = stop
        self.reporters = reporters
        self.report = report  # to the poll loop, which records it
        self._told: dict[str, dict[str, object]] = {}  # what was reported, by notice
        self.imds_factory = imds_factory
        self.client_factory = client_factory or _default_client
        # The running config's DRY_RUN (a reload may change it), read at each call.
        self.dry_run = dry_run or (lambda: bool(settings.dry_run))
        self.group: str | None = settings.asg_name or None
        self.instance_id: str | None = None
        self.region: str | None = None
        self.client: Any = None  # an aws.autoscaling.AutoScalingClient once resolved (or a test's stand-in)
        self.problem = ""  # why calls cannot be made yet (said once)
        self._imds: ImdsClient | None = None
        self._beat_paused_until: dict[str, float] = {}  # monotonic; after a heartbeat that failed
        self._rng = random.Random()
        self._early: dict[str, float] = {}  # each notice's own random head start (lifecycle.next_heartbeat)
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lifecycle-hook", daemon=True)

    # ------------------------------------------------------------ the worker's side

    def start(self, identity: InstanceIdentity | None) -> None:
        if identity is not None:
            self.instance_id, self.region = identity.instance_id, identity.region
        self._thread.start()

    def poke(self) -> None:
        """A response ended (or began): look now."""
        self._wake.set()

    def join(self, timeout_s: float) -> None:
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout_s)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            # Resolve the group, the endpoint and the credentials up front: a missing permission
            # or tag shows at start, not when a termination comes, and the first call is quick.
            if self._ready():
                try:
                    self.client.credentials.get_frozen_credentials()
                except Exception as error:  # said now; every call fetches them again
                    log.warning("lifecycle hook %s: %s", self.hook_name, error)
            while not self.stop.is_set():
                self.tick()
                self._wake.wait(self._sleep_s())
                self._wake.clear()
        finally:
            if self.client is not None:
                quietly(self.client.close)
            if self._imds is not None:
                quietly(self._imds.close)

    def _sleep_s(self) -> float:
        # The worker pokes at the start and the end of every response; looking on our own is
        # only a backstop (a notice that waits for Kubernetes still gets its heartbeats).
        idle = min(IDLE_LOOK_S, 0.1 * self.policy.heartbeat_timeout_s)
        records = self._records()
        at = lifecycle.wake_at(records, self.policy, self._early_s(records))
        if at is None:
            return idle
        return max(0.05, min(idle, (at - self.clock.now()).total_seconds()))

    def _early_s(self, records: Mapping[str, NoticeRecord]) -> dict[str, float]:
        gap_s = self.policy.share * self.policy.heartbeat_timeout_s
        for notice_id in records:
            if notice_id not in self._early:
                self._early[notice_id] = self._rng.uniform(0.0, gap_s * lifecycle.HEARTBEAT_JITTER_SHARE)
        return self._early

    def tick(self) -> None:
        """One look at the records: completions first (the drain is over), then heartbeats."""
        records = self._records()
        completions = lifecycle.completion_due(records)
        paused = self._beat_paused_until
        beats = [
            notice_id
            for notice_id in lifecycle.heartbeat_due(
                records, self.policy, self.clock.now(), self._early_s(records)
            )
            if paused.get(notice_id, 0.0) <= self.clock.monotonic()
        ]
        if not completions and not beats:
            return
        if not self._ready():
            return
        try:
            for notice_id in completions:
                self._complete(records[notice_id])
            for notice_id in beats:
                self._heartbeat(records[notice_id])
        except _Stopping:
            log.info("stopping before the lifecycle action was completed; the next start completes it")

    # ------------------------------------------------------------ the calls

    def _complete(self, record: NoticeRecord) -> None:
        if self.dry_run():
            # Settled without a call: CONTINUE would release an instance whose pods are all on it.
            self._tell(record, lifecycle_outcome="dry run: not completed")
            log.warning(
                "notice %s: dry run: would send CompleteLifecycleAction (LifecycleActionResult=CONTINUE) "
                "for %s in group %s, hook %s; nothing sent",
                record.id,
                self.instance_id,
                self.group,
                self.hook_name,
            )
            return
        try:
            request_id = self._call(
                "CompleteLifecycleAction",
                COMPLETE_ATTEMPTS,
                lambda: self.client.complete_lifecycle_action(self.group, self.hook_name, self.instance_id),
            )
        except _Stopping:
            raise
        except Exception as error:
            if isinstance(error, AutoScalingError) and error.gone:
                done = self._tell(
                    record, lifecycle_completed_at=iso(self.clock.now()), lifecycle_outcome="not waiting"
                )
                log.warning(
                    "notice %s: lifecycle hook %s was no longer waiting (completed elsewhere, or its "
                    "heartbeat timeout ran out): %s",
                    record.id,
                    self.hook_name,
                    error,
                )
                self._report(
                    done,
                    "LifecycleCompleted",
                    f"lifecycle hook {self.hook_name} was no longer waiting: {error}",
                )
                return
            failed = self._tell(record, lifecycle_outcome=f"failed: {error}")
            log.error(
                "notice %s: could not complete lifecycle hook %s: %s; the instance is released when "
                "the hook's heartbeat timeout runs out",
                record.id,
                self.hook_name,
                error,
            )
            self._report(
                failed,
                "LifecycleFailed",
                f"could not complete lifecycle hook {self.hook_name}: "
                f"{error}; the instance is released at the hook's timeout",
            )
            return
        done = self._tell(record, lifecycle_completed_at=iso(self.clock.now()), lifecycle_outcome="completed")
        held = lifecycle.held_seconds(done)
        text = (
            f"completed lifecycle hook {self.hook_name} (CONTINUE) for {self.instance_id} in group "
            f"{self.group}: the instance was held {held:.1f}s, {done.lifecycle_heartbeats} heartbeat(s)"
        )
        log.info("notice %s: %s (request %s)", record.id, text, request_id or "-")
        self._report(done, "LifecycleCompleted", text)

    def _heartbeat(self, record: NoticeRecord) -> None:
        if self.dry_run():
            # Nothing recorded: the next one would be due as if this had been sent.
            every_s = self.policy.share * self.policy.heartbeat_timeout_s
            self._beat_paused_until[record.id] = self.clock.monotonic() + every_s
            log.info(
                "notice %s: dry run: would send RecordLifecycleActionHeartbeat for %s in group %s, "
                "hook %s; nothing sent",
                record.id,
                self.instance_id,
                self.group,
                self.hook_name,
            )
            return
        try:
            self._call(
                "RecordLifecycleActionHeartbeat",
                HEARTBEAT_ATTEMPTS,
                lambda: self.client.record_lifecycle_action_heartbeat(
                    self.group, self.hook_name, self.instance_id
                ),
            )
        except _Stopping:
            raise
        except Exception as error:
            if isinstance(error, AutoScalingError) and error.gone:
                self._tell(record, lifecycle_outcome="not waiting")
                log.warning(
                    "notice %s: lifecycle hook %s is no longer waiting (%s); the drain carries on "
                    "while the instance lasts",
                    record.id,
                    self.hook_name,
                    error,
                )
            else:
                self._beat_paused_until[record.id] = self.clock.monotonic() + HEARTBEAT_PAUSE_S
                log.error(
                    "notice %s: lifecycle heartbeat failed: %s; the drain carries on (next try in %.0fs)",
                    record.id,
                    error,
                    HEARTBEAT_PAUSE_S,
                )
            self._report(
                record,
                "LifecycleHeartbeatFailed",
                f"heartbeat of lifecycle hook {self.hook_name} failed: {error}",
            )
            return
        now = self.clock.now()
        beat = self._tell(
            record, lifecycle_heartbeats=record.lifecycle_heartbeats + 1, lifecycle_heartbeat_at=iso(now)
        )
        later = lifecycle.next_heartbeat(beat, self.policy)
        text = (
            f"heartbeat {beat.lifecycle_heartbeats} for lifecycle hook {self.hook_name}: held until about "
            f"{iso(now + _seconds(self.policy.heartbeat_timeout_s))}"
            + ("" if later is not None else " (ASG_HEARTBEAT_MAX reached: no more heartbeats)")
        )
        log.info("notice %s: %s", record.id, text)
        self._report(beat, "LifecycleHeartbeat", text)

    def _call(self, action: str, attempts: int, call: Callable[[], object]) -> str:
        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            if isinstance(error, AutoScalingError) and error.refresh:
                self.client.credentials.invalidate()
            log.warning("%s attempt %d failed: %s; retrying", action, state.attempt_number, error)

        def sleep(seconds: float) -> None:
            if self.clock.wait(self.stop, seconds):
                raise _Stopping()

        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=RETRY_WAIT_S[0], max=RETRY_WAIT_S[1]) + wait_random(0, 0.25),
            retry=retry_if_exception(lambda error: isinstance(error, AutoScalingError) and error.retry),
            before_sleep=before_sleep,
            sleep=sleep,
            reraise=True,
        )
        return str(retrying(call) or "")

    # ------------------------------------------------------------ what the calls need

    def _ready(self) -> bool:
        """Group name, instance id, region and a client; False (said once) while one is missing."""
        if self.client is not None and self.group:
            return True
        try:
            self._resolve()
        except Exception as error:  # never let the thread die: the next look tries again
            problem = f"lifecycle hook {self.hook_name}: {error}"
            if problem != self.problem:
                log.error("%s", problem)
                self.problem = problem
            return False
        return True

    def _resolve(self) -> None:
        imds = self._imds_client()
        if not self.instance_id or not self.region:
            identity = imds.identity()
            self.instance_id, self.region = identity.instance_id, identity.region
        if not self.instance_id or not self.region:
            raise LookupError("IMDS gave no instance-id or placement/region")
        if not self.group:
            try:
                tag = imds.get(GROUP_TAG_PATH)
            except ImdsError as error:
                raise LookupError(f"cannot read the group name from IMDS: {error}") from None
            if not tag or not tag.strip():
                raise LookupError(
                    "ASG_NAME is empty and IMDS has no instance tag aws:autoscaling:groupName "
                    "(enable instance metadata tags in the launch template, or set ASG_NAME)"
                )
            self.group = tag.strip()
        if self.client is None:
            self.client = self.client_factory(self.settings, self.region, imds)
        log.info(
            "lifecycle hook %s: group %s, instance %s, endpoint %s",
            self.hook_name,
            self.group,
            self.instance_id,
            getattr(self.client, "endpoint", "?"),
        )

    def _imds_client(self) -> ImdsClient:
        if self._imds is None:  # a connection of its own: a credentials fetch never delays a poll
            self._imds = self.imds_factory()
        return self._imds

    def _records(self) -> Mapping[str, NoticeRecord]:
        """The store's records with what this thread reported over them (the loop may not have
        written it yet: a completion must not be sent twice)."""
        records = self.store.records()
        for kept in (self._told, self._early, self._beat_paused_until):
            for gone in set(kept) - set(records):  # forgotten by the store: nothing more to say
                del kept[gone]
        return {key: replace(record, **self._told.get(key, {})) for key, record in records.items()}  # type: ignore[arg-type]

    def _tell(self, record: NoticeRecord, **fields: object) -> NoticeRecord:
        """An accepted call: reported to the loop, which records it."""
        self._told.setdefault(record.id, {}).update(fields)
        self.report(LifecycleTold(record.id, dict(fields)))
        return replace(record, **fields)  # type: ignore[arg-type]

    def _report(self, record: NoticeRecord, reason: str, message: str) -> None:
        for reporter in self.reporters():
            quietly(reporter.step, record, reason, message)


def _seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def _default_client(settings, region: str, imds: ImdsClient):
    endpoint = settings.asg_endpoint_url or autoscaling_endpoint(region, settings.asg_fips)
    return AutoScalingClient(
        endpoint, region, InstanceRoleCredentials(imds), ca_bundle=settings.asg_ca_bundle
    )
