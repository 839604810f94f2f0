"""Drain this node's pods by a deadline: order them in tiers, evict in parallel, clamp grace,
retry PDB refusals, force at the last safe moment, and wait for deletions with one watch.

The rules are pure and live apart: which pods and when (pod_rules.py), the order of retries and
one probe per disruption budget (eviction_queue.py). Drainer does the I/O. Every request goes
through the API client's gate (gate.py) at drain priority, carrying its pod's last safe moment,
so a throttled server holds the drain back until then and no longer. While nothing is due, the
drain sleeps until the next retry, answer, watch event or stop check.

Why one module of this size: the rules are already apart, and what is left is one job, the
drain's I/O loop (list, evict by tiers, settle each answer, wait for the pods to go), whose steps
share the Drainer's clock, gate priority and stop check.
"""

from __future__ import annotations

import concurrent.futures
import logging
import random
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Callable

from nodeagent.clock import Clock, SystemClock
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import KubeApi
from nodeagent.kube.errors import ApiError, KubeError, RequestAbandoned
from nodeagent.kube.eviction_queue import EvictionQueue, Mode, Role
from nodeagent.kube.gate import Priority
from nodeagent.kube.pod_rules import (
    PROBE_BACKOFF_MAX_S,
    RETRY_BACKOFF_MAX_S,
    DrainOptions,
    PodInfo,
    clamped_grace,
    last_safe_moment,
    retry_delay,
    select_pods,
)
from nodeagent.kube.pod_watch import PodWatch
from nodeagent.kube.throttle import is_pdb_refusal
from nodeagent.log_once import LogOnce
from nodeagent.retry import Backoff, Failure, retry

log = logging.getLogger("nodeagent.kube.drain")

STOP_CHECK_S = 0.5  # an idle drain looks at its stop flag this often


@dataclass
class DrainResult:
    total: int = 0
    evicted: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # could not be read: left on the node
    skipped: int = 0
    requests: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.left and not self.failed and not self.interrupted


class _Ended(Exception):
    """The deadline passed or a stop came: no more attempts to list."""


class Outcome(str, Enum):
    """How one attempt on one pod ended."""

    EVICTED = "evicted"
    GONE = "gone"  # already gone (404/409 to its eviction)
    REFUSED = "refused"  # its disruption budget said no, before its last safe moment
    RETRY = "retry"  # an error worth another try
    THROTTLED = "throttled"  # the server's load: the gate holds the pause, try again at once
    FORCE = "force"  # refused at its last safe moment: delete it (FORCE_AT_DEADLINE)
    FORCED = "forced"
    FAILED = "failed"
    EXPIRED = "expired"  # the deadline passed
    STOPPED = "stopped"  # cancelled, superseded or the agent stopping


class Drainer:
    def __init__(
        self,
        api: KubeApi,
        node: str,
        options: DrainOptions,
        *,
        progress: Callable[[int, int], None] = lambda gone, total: None,
        should_stop: Callable[[], bool] = lambda: False,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_listed: Callable[[list[JsonObject]], None] = lambda pods: None,
        pool: concurrent.futures.Executor | None = None,
    ):
        self.api = api
        # The threads that send evictions: the responder's, kept from drain to drain (new threads
        # for every drain leave memory behind in the allocator); a pool of its own otherwise.
        self.pool = pool
        self.on_listed = on_listed  # sees the node's pods as listed (the responder looks for NTH)
        self.node = node
        self.options = options
        self.progress = progress
        self.should_stop = should_stop  # a cancel, a supersede or the agent's stop
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self._once = LogOnce(log)
        self._refused_by: dict[str, str | None] = {}  # pod key -> the budget its last refusal named
        self._wake = threading.Condition()
        self._wakes = 0  # bumped by every answer and watch change: the evict loop's reason to look

    def list_pods(self, act_by: datetime | None = None) -> tuple[list[JsonObject], str]:
        return self.api.list_all(
            "/api/v1/pods",
            [("fieldSelector", f"spec.nodeName={self.node}")],
            act_by=act_by,
            give_up=self.should_stop,
        )

    def _poke(self) -> None:
        with self._wake:
            self._wakes += 1
            self._wake.notify_all()

    def run(self) -> DrainResult:
        requests_before = self.api.requests
        started = self.clock.now()
        pods, resource_version = self._list_until_deadline()
        result = DrainResult()
        if pods is None:
            result.interrupted = self.should_stop()
            result.failed.append("could not list pods before the deadline")
            return result
        self.on_listed(pods)
        selection = select_pods(pods, self.options)
        result.total = len(selection.evict)
        result.skipped = len(selection.skipped)
        result.malformed = [key for key, _ in selection.malformed]
        for key, why in selection.skipped:
            log.debug("not evicting %s: %s", key, why)
        for key, why in selection.malformed:
            log.warning("not evicting %s: the API's description of it cannot be read (%s)", key, why)
        log.info(
            "draining %d pods (%d left alone: DaemonSet, mirror, finished), deadline in %.0fs",
            result.total,
            result.skipped,
            (self.options.deadline - started).total_seconds(),
        )
        watch = PodWatch(
            self.api, self.node, {p.uid for p in selection.evict}, resource_version, on_change=self._poke
        )
        if not self.options.dry_run:
            watch.start()
        try:
            self._evict_all(selection.evict, started, watch, result)
            if not self.options.dry_run:
                given_up = set(result.blocked) | set(result.failed)
                self._wait_gone([p for p in selection.evict if p.key not in given_up], watch, result)
                result.left = sorted(set(result.left) | set(result.blocked) | set(result.malformed))
        finally:
            watch.close()
        result.requests = self.api.requests - requests_before
        return result

    def _list_until_deadline(self) -> tuple[list[JsonObject] | None, str]:
        # No pod's last safe moment comes before half the window is gone (last_safe_moment):
        # the list, which every eviction needs, leaves by then whatever the server asked.
        window = (self.options.pods_gone_by - self.clock.now()).total_seconds()
        act_by = self.options.pods_gone_by - timedelta(seconds=max(0.0, window) / 2)

        def attempt() -> tuple[list[JsonObject], str]:
            if self.should_stop() or self.clock.now() >= self.options.deadline:
                raise _Ended()
            return self.list_pods(act_by)

        def failed(failure: Failure[tuple[list[JsonObject], str]]) -> None:
            self._once.first(
                "list", f"listing this node's pods failed ({failure.error}); retrying until the deadline"
            )

        try:
            return retry(
                attempt,
                schedule=Backoff(0.2, RETRY_BACKOFF_MAX_S, rng=self.rng),
                transient=lambda error: (
                    isinstance(error, KubeError) and not isinstance(error, RequestAbandoned)
                ),
                sleep=self.clock.sleep,
                before_sleep=failed,
            )
        except (_Ended, RequestAbandoned):  # the deadline passed, or a stop came while it waited
            return None, ""

    # ------------------------------------------------------------------ evictions

    def _evict_all(
        self, pods: list[PodInfo], started: datetime, watch: PodWatch, result: DrainResult
    ) -> None:
        tiers = sorted({pod.tier for pod in pods})
        by_tier = {tier: [p for p in pods if p.tier == tier] for tier in tiers}
        queue = EvictionQueue()
        opened: set[int] = set()
        own_pool = self.pool is None
        pool = self.pool or concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.parallelism, thread_name_prefix="evict"
        )
        inflight: dict[concurrent.futures.Future, tuple[PodInfo, float]] = {}
        gone_reported = -1
        try:
            while True:
                with self._wake:
                    seen = self._wakes
                if self.should_stop():
                    result.interrupted = True
                    break
                for future in [f for f in inflight if f.done()]:
                    pod, backoff = inflight.pop(future)
                    try:
                        outcome = future.result()
                    except Exception:  # a bug or a hostile answer on one pod must not end the drain
                        log.exception("evicting %s failed unexpectedly; leaving it", pod.key)
                        outcome = Outcome.FAILED
                    self._settle(pod, outcome, backoff, started, watch, queue, result)
                now_mono = self.clock.monotonic()
                for pod in queue.waiting():  # left on its own while it waited: nothing to try
                    if watch.gone(pod.uid):
                        result.evicted.append(pod.key)
                        queue.went(pod, now_mono)
                tier_opens_in = self._open_tiers(tiers, by_tier, opened, watch, queue, now_mono, started)
                while len(inflight) < self.options.parallelism:
                    due = queue.pop_due(now_mono)
                    if due is None:
                        break
                    if watch.gone(due.pod.uid):  # went meanwhile (e.g. an eviction whose answer was lost)
                        result.evicted.append(due.pod.key)
                        queue.went(due.pod, now_mono)
                        continue
                    future = pool.submit(self._attempt, due.pod, due.mode, started)
                    inflight[future] = (due.pod, due.backoff)
                    future.add_done_callback(lambda _: self._poke())
                gone = sum(1 for p in pods if watch.gone(p.uid))
                if gone != gone_reported:
                    self.progress(gone, len(pods))
                    gone_reported = gone
                if not inflight and not queue and len(opened) == len(tiers):
                    break
                next_due = queue.next_due() if len(inflight) < self.options.parallelism else None
                self._sleep_until_something(seen, next_due, tier_opens_in, now_mono)
        finally:
            if own_pool:
                pool.shutdown(wait=True)
            else:  # the shared pool stays; this drain's own attempts end first
                concurrent.futures.wait(list(inflight))

    def _sleep_until_something(
        self, seen: int, next_due: float | None, tier_opens_in: float | None, now_mono: float
    ) -> None:
        """Sleep until the next due retry, an answer, a watch change or the next stop check:
        never spin while requests wait on the server or pods wait on their PDB."""
        bounds = [STOP_CHECK_S]
        if next_due is not None:
            bounds.append(next_due - now_mono)
        if tier_opens_in is not None:
            bounds.append(tier_opens_in)
        with self._wake:
            if self._wakes == seen:
                self._wake.wait(max(0.0, min(bounds)))

    def _open_tiers(
        self,
        tiers: list[int],
        by_tier: dict[int, list[PodInfo]],
        opened: set[int],
        watch: PodWatch,
        queue: EvictionQueue,
        now_mono: float,
        started: datetime,
    ) -> float | None:
        """Open the next tier when the earlier ones are gone or its time has come. Returns the
        seconds until the next closed tier opens on time alone (None when all are open)."""
        for index, tier in enumerate(tiers):
            if tier in opened:
                continue
            earlier = [p for t in tiers[:index] for p in by_tier[t]]
            start_by = min(last_safe_moment(p, started, self.options) for p in by_tier[tier])
            now = self.clock.now()
            if all(watch.gone(p.uid) for p in earlier) or now >= start_by or self.options.dry_run:
                opened.add(tier)
                if index > 0:
                    log.info("evicting tier %d (%d critical pods) now", index, len(by_tier[tier]))
                for pod in by_tier[tier]:
                    if not pod.terminating:  # evicted before a restart: just wait for it
                        queue.push(pod, now_mono)
                continue  # the next tier may open at once too (its own time may have come)
            return (start_by - now).total_seconds()
        return None

    def _settle(
        self,
        pod: PodInfo,
        outcome: Outcome,
        backoff: float,
        started: datetime,
        watch: PodWatch,
        queue: EvictionQueue,
        result: DrainResult,
    ) -> None:
        now_mono = self.clock.monotonic()
        if outcome in (Outcome.EVICTED, Outcome.GONE):
            result.evicted.append(pod.key)
            if outcome == Outcome.GONE:
                watch.mark_gone(pod.uid)
            queue.went(pod, now_mono)
        elif outcome == Outcome.FORCED:
            result.forced.append(pod.key)
            log.warning("forced %s: PDB still refused at its last safe moment", pod.key)
            queue.went(pod, now_mono)
        elif outcome == Outcome.FORCE:
            if not self.options.force_at_deadline:
                result.blocked.append(pod.key)
                log.warning(
                    "left %s: its PDB refused eviction until its last safe moment (FORCE_AT_DEADLINE off)",
                    pod.key,
                )
                queue.left(pod)
                return
            queue.push(pod, now_mono, Mode.FORCE, backoff)
        elif outcome == Outcome.THROTTLED:
            queue.push(pod, now_mono, Mode.EVICT, backoff)  # the gate holds it until the pause ends
        elif outcome in (Outcome.REFUSED, Outcome.RETRY):
            safe_at = last_safe_moment(pod, started, self.options)
            role = Role.ALONE
            if outcome == Outcome.REFUSED:
                role = queue.role_after_refusal(pod, self._refused_by.pop(pod.key, None))
            if role == Role.PARKED:
                queue.park(pod, now_mono + (safe_at - self.clock.now()).total_seconds())
                return
            cap = PROBE_BACKOFF_MAX_S if role == Role.PROBE else RETRY_BACKOFF_MAX_S
            delay = retry_delay(min(backoff, cap), self.clock.now(), safe_at, self.rng)
            queue.push(pod, now_mono + delay, Mode.EVICT, min(cap, backoff * 2))
        elif outcome == Outcome.EXPIRED:
            log.error("gave up on %s: the deadline passed", pod.key)
            queue.left(pod)
        elif outcome == Outcome.STOPPED:
            pass
        else:
            result.failed.append(pod.key)
            queue.left(pod)

    def _attempt(self, pod: PodInfo, mode: Mode, started: datetime) -> Outcome:
        if self.should_stop():
            return Outcome.STOPPED  # asked right before the request: a cancelled response sends no more
        now = self.clock.now()
        if now >= self.options.deadline:
            return Outcome.EXPIRED
        grace = clamped_grace(pod, now, self.options)
        query = [("dryRun", "All")] if self.options.dry_run else []
        safe_at = last_safe_moment(pod, started, self.options)
        try:
            if mode == Mode.FORCE:
                self.api.request(
                    "DELETE",
                    f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}",
                    query=query,
                    body={
                        "apiVersion": "v1",
                        "kind": "DeleteOptions",
                        "gracePeriodSeconds": grace,
                        "preconditions": {"uid": pod.uid},
                    },
                    priority=Priority.DRAIN,
                    act_by=now,
                    give_up=self.should_stop,
                )
                return Outcome.FORCED
            body: JsonObject = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": {"gracePeriodSeconds": grace, "preconditions": {"uid": pod.uid}},
            }
            if self.options.dry_run:
                body["deleteOptions"]["dryRun"] = ["All"]
            self.api.request(
                "POST",
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction",
                query=query,
                body=body,
                priority=Priority.DRAIN,
                act_by=safe_at,
                give_up=self.should_stop,
            )
            return Outcome.EVICTED
        except RequestAbandoned:
            return Outcome.STOPPED
        except ApiError as error:
            if error.status in (404, 409):
                log.info(
                    "%s was already gone (HTTP %d to its eviction); counted as evicted", pod.key, error.status
                )
                return Outcome.GONE
            if is_pdb_refusal(error.status, error.message):
                if self.clock.now() >= safe_at:
                    return Outcome.FORCE
                self._refused_by[pod.key] = error.budget
                return Outcome.REFUSED
            if error.throttling:
                return Outcome.THROTTLED
            if error.reason == "BadBody":
                self._once.first(
                    f"badbody-{pod.key}",
                    f"eviction of {pod.key} got a malformed answer "
                    f"(HTTP {error.status}: {error.message}); retrying",
                )
                return Outcome.RETRY
            if error.status == 403:
                self._once.first(f"403-{pod.key}", f"not allowed to evict {pod.key}: {error.message}")
                return Outcome.FAILED
            self._once.first(
                f"api-{error.status}", f"eviction of {pod.key} got HTTP {error.status}; retrying"
            )
            return Outcome.RETRY
        except KubeError as error:
            self._once.first(
                "unavailable", f"API unreachable while evicting ({error}); retrying until the deadline"
            )
            return Outcome.RETRY

    # ------------------------------------------------------------------ waiting

    def _wait_gone(self, pods: list[PodInfo], watch: PodWatch, result: DrainResult) -> None:
        while not self.should_stop():
            since = watch.changes
            remaining = [p for p in pods if not watch.gone(p.uid)]
            self.progress(len(pods) - len(remaining), len(pods))
            if not remaining:
                break
            left_s = (self.options.deadline - self.clock.now()).total_seconds()
            if left_s <= 0:
                result.left = [p.key for p in remaining]
                break
            watch.wait(min(left_s, 1.0), since)
        else:
            result.interrupted = True
