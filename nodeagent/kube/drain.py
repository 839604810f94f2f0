"""Drain this node's pods by a deadline: select, order in tiers, evict in parallel, clamp grace,
retry PDB refusals, force at the last safe moment, and wait for deletions with one watch.

`select_pods` and `last_safe_moment` are pure; Drainer does the I/O.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from nodeagent.clock import Clock, SystemClock
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import ApiError, KubeApi, KubeError
from nodeagent.log_once import LogOnce
from nodeagent.retry import Backoff, Failure, retry

log = logging.getLogger("nodeagent.kube.drain")

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RETRY_BACKOFF_MAX_S = 1.0
FINISHED_PHASES = ("Succeeded", "Failed")
# Retry pacing (retry_delay): near the last safe moment a refused pod is retried about once a
# second; further out, never more often than this share of the time left, up to a cap.
RETRY_SHARE_OF_TIME_LEFT = 0.1
RETRY_GAP_MAX_S = 60.0


@dataclass(frozen=True)
class DrainOptions:
    deadline: datetime
    margin_s: float
    force_at_deadline: bool
    dry_run: bool = False
    parallelism: int = 32
    evict_local_storage: bool = True
    evict_unmanaged: bool = True
    last_tier_classes: tuple[str, ...] = ("system-cluster-critical", "system-node-critical")

    @property
    def pods_gone_by(self) -> datetime:
        return self.deadline - timedelta(seconds=self.margin_s)


@dataclass(frozen=True)
class PodInfo:
    namespace: str
    name: str
    uid: str
    grace_s: int
    tier: int
    terminating: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class Selection:
    evict: list[PodInfo] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (namespace/name, why)


def select_pods(pods: Sequence[JsonObject], options: DrainOptions) -> Selection:
    """Which of the node's pods to evict, and in which tier. Pure."""
    selection = Selection()
    for pod in pods:
        metadata = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        status = pod.get("status") or {}
        key = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
        annotations = metadata.get("annotations") or {}
        owners = metadata.get("ownerReferences") or []
        if MIRROR_ANNOTATION in annotations:
            selection.skipped.append((key, "mirror pod"))
            continue
        if any(owner.get("kind") == "DaemonSet" for owner in owners):
            selection.skipped.append((key, "DaemonSet pod"))
            continue
        if status.get("phase") in FINISHED_PHASES:
            selection.skipped.append((key, "finished"))
            continue
        if not options.evict_unmanaged and not any(owner.get("controller") for owner in owners):
            selection.skipped.append((key, "unmanaged (EVICT_UNMANAGED=false)"))
            continue
        if not options.evict_local_storage and any(
            "emptyDir" in volume for volume in spec.get("volumes") or []
        ):
            selection.skipped.append((key, "emptyDir (EVICT_LOCAL_STORAGE=false)"))
            continue
        grace = spec.get("terminationGracePeriodSeconds")
        selection.evict.append(
            PodInfo(
                namespace=str(metadata.get("namespace", "")),
                name=str(metadata.get("name", "")),
                uid=str(metadata.get("uid", "")),
                grace_s=30 if grace is None else int(grace),
                tier=1 if spec.get("priorityClassName") in options.last_tier_classes else 0,
                terminating=bool(metadata.get("deletionTimestamp")),
            )
        )
    return selection


def last_safe_moment(pod: PodInfo, drain_started: datetime, options: DrainOptions) -> datetime:
    """The latest moment a PDB-blocked pod is retried before it is forced (or given up).

    Retrying stops early enough that a forced delete still gives the pod its own grace, but never
    more than half the drain window, so a 600 s grace cannot end the retries at once.
    """
    window = max(0.0, (options.pods_gone_by - drain_started).total_seconds())
    reserve = min(float(pod.grace_s), window / 2)
    return options.pods_gone_by - timedelta(seconds=reserve)


def retry_delay(backoff_s: float, now: datetime, last_safe: datetime) -> float:
    """Seconds until a refused (or failed) eviction is tried again. Pure.

    The backoff (0.1 s doubling to 1 s) while the last safe moment is near; a tenth of the time
    left, capped at a minute, while it is far, so a two-day maintenance window costs a few
    thousand requests per blocked pod instead of one a second. Never past the last safe moment:
    a PDB that frees up late is still honoured there (docs/notices.md has the worst case).
    """
    left = (last_safe - now).total_seconds()
    if left <= 0:
        return 0.0
    gap = max(backoff_s, min(RETRY_GAP_MAX_S, RETRY_SHARE_OF_TIME_LEFT * left))
    return min(gap, left)


def clamped_grace(pod: PodInfo, now: datetime, options: DrainOptions) -> int:
    left = int((options.pods_gone_by - now).total_seconds())
    return max(0, min(pod.grace_s, left))


@dataclass
class DrainResult:
    total: int = 0
    evicted: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    skipped: int = 0
    requests: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.left and not self.failed and not self.interrupted


class PodWatch:
    """Which of our pods are still on the node, kept current by one watch (re-listed on breaks)."""

    def __init__(self, api: KubeApi, node: str, uids: set[str], resource_version: str):
        self.api = api
        self.node = node
        self.present: set[str] = set(uids)
        self._rv = resource_version
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self.breaks = 0
        self.changes = 0  # bumped on every change to `present`
        self._failing = False  # the API is failing us: one warning per outage, not one per retry

    def start(self) -> PodWatch:
        self._thread.start()
        return self

    def gone(self, uid: str) -> bool:
        with self._cond:
            return uid not in self.present

    def mark_gone(self, uid: str) -> None:
        with self._cond:
            self.present.discard(uid)
            self.changes += 1
            self._cond.notify_all()

    def wait(self, timeout_s: float, since: int | None = None) -> None:
        """Wait for a change; `since` (a `changes` value read before looking): not if one came
        already, so a pod that leaves between the look and the wait is not noticed a second late."""
        with self._cond:
            if since is None or self.changes == since:
                self._cond.wait(timeout=max(0.0, timeout_s))

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        # One pass per stream: a stream the server ends is resumed at once (the backoff starts
        # over); a broken one is retried after a backoff, re-listing first, until the stop.
        while not self._stop.is_set():
            retry(
                self._watch_pass(),
                schedule=Backoff(0.2, 2.0),
                transient=lambda error: isinstance(error, (KubeError, ValueError)),
                stop=lambda failure: self._stop.is_set(),
                sleep=lambda seconds: not self._stop.wait(seconds),
                before_sleep=self._watch_broke,
                gave_up=lambda failure: None,
            )
            if not self._stop.is_set():
                log.debug(
                    "pod watch ended by the server; resuming from resourceVersion %s", self._rv or "(none)"
                )

    def _watch_pass(self) -> Callable[[], None]:
        attempts = itertools.count()

        def watch() -> None:
            if next(attempts):  # after a break: catch up on what the broken stream missed
                self._relist()
            self._watch_once()

        return watch

    def _watch_broke(self, failure: Failure[None]) -> None:
        self.breaks += 1
        log.log(
            logging.DEBUG if self._failing else logging.WARNING,
            "pod watch broke (%s); re-listing",
            failure.error,
        )

    def _watch_once(self) -> None:
        query = [
            ("fieldSelector", f"spec.nodeName={self.node}"),
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", "300"),
        ]
        if self._rv:
            query.append(("resourceVersion", self._rv))
        for event in self.api.stream_lines("/api/v1/pods", query, read_timeout_s=330):
            if self._stop.is_set():
                return
            kind = event.get("type")
            obj = event.get("object") or {}
            metadata = obj.get("metadata") or {}
            if kind == "ERROR":
                self._rv = ""
                raise ApiError(
                    int(obj.get("code", 500)),
                    str(obj.get("reason", "")),
                    str(obj.get("message", "")),
                    "WATCH",
                    "/api/v1/pods",
                )
            self._rv = str(metadata.get("resourceVersion") or self._rv)
            if kind == "DELETED" or (
                kind == "MODIFIED" and (obj.get("status") or {}).get("phase") in FINISHED_PHASES
            ):
                self.mark_gone(str(metadata.get("uid")))

    def _relist(self) -> None:
        try:
            listing = self.api.request(
                "GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={self.node}")]
            )
        except KubeError as error:
            log.log(
                logging.DEBUG if self._failing else logging.WARNING,
                "re-list of pods failed: %s (retrying quietly until it works)",
                error,
            )
            self._failing = True
            return
        if self._failing:
            log.info("pod watch: the API answers again; re-listed the node's pods")
            self._failing = False
        still_here = {str((p.get("metadata") or {}).get("uid")) for p in listing.get("items") or []}
        with self._cond:
            self.present &= still_here
            self.changes += 1
            self._cond.notify_all()
        self._rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")


class _Ended(Exception):
    """The deadline passed or a stop came: no more attempts to list."""


# Outcomes of one attempt on one pod.
EVICTED, GONE, RETRY, FORCE, FORCED, BLOCKED, FAILED, EXPIRED, STOPPED = (
    "evicted",
    "gone",
    "retry",
    "force",
    "forced",
    "blocked",
    "failed",
    "expired",
    "stopped",
)


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
        on_listed: Callable[[list[JsonObject]], None] = lambda pods: None,
    ):
        self.api = api
        self.on_listed = on_listed  # sees the node's pods as listed (the responder looks for NTH)
        self.node = node
        self.options = options
        self.progress = progress
        self.should_stop = should_stop  # a cancel, a supersede or the agent's stop
        self.clock: Clock = clock or SystemClock()
        self._once = LogOnce(log)

    def list_pods(self) -> tuple[list[JsonObject], str]:
        listing = self.api.request(
            "GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={self.node}")]
        )
        return list(listing.get("items") or []), str(
            (listing.get("metadata") or {}).get("resourceVersion") or ""
        )

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
        for key, why in selection.skipped:
            log.debug("not evicting %s: %s", key, why)
        log.info(
            "draining %d pods (%d left alone: DaemonSet, mirror, finished), deadline in %.0fs",
            result.total,
            result.skipped,
            (self.options.deadline - started).total_seconds(),
        )
        watch = PodWatch(self.api, self.node, {p.uid for p in selection.evict}, resource_version)
        if not self.options.dry_run:
            watch.start()
        try:
            self._evict_all(selection.evict, started, watch, result)
            if not self.options.dry_run:
                given_up = set(result.blocked) | set(result.failed)
                self._wait_gone([p for p in selection.evict if p.key not in given_up], watch, result)
                result.left = sorted(set(result.left) | set(result.blocked))
        finally:
            watch.close()
        result.requests = self.api.requests - requests_before
        return result

    def _list_until_deadline(self) -> tuple[list[JsonObject] | None, str]:
        def attempt() -> tuple[list[JsonObject], str]:
            if self.should_stop() or self.clock.now() >= self.options.deadline:
                raise _Ended()
            return self.list_pods()

        def failed(failure: Failure[tuple[list[JsonObject], str]]) -> None:
            self._once.first(
                "list", f"listing this node's pods failed ({failure.error}); retrying until the deadline"
            )

        try:
            return retry(
                attempt,
                schedule=Backoff(0.2, RETRY_BACKOFF_MAX_S),
                transient=lambda error: isinstance(error, KubeError),
                sleep=self.clock.sleep,
                before_sleep=failed,
            )
        except _Ended:
            return None, ""

    # ------------------------------------------------------------------ evictions

    def _evict_all(
        self, pods: list[PodInfo], started: datetime, watch: PodWatch, result: DrainResult
    ) -> None:
        tiers = sorted({pod.tier for pod in pods})
        by_tier = {tier: [p for p in pods if p.tier == tier] for tier in tiers}
        counter = itertools.count()
        queue: list[tuple[float, int, PodInfo, str, float]] = []  # (due, seq, pod, mode, backoff)
        opened: set[int] = set()
        outcome: dict[str, str] = {}
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.parallelism, thread_name_prefix="evict"
        )
        inflight: dict[concurrent.futures.Future, tuple[PodInfo, str, float]] = {}
        try:
            while True:
                if self.should_stop():
                    result.interrupted = True
                    break
                now_mono = self.clock.monotonic()
                self._open_tiers(tiers, by_tier, opened, watch, queue, counter, now_mono, started)
                while queue and queue[0][0] <= now_mono and len(inflight) < self.options.parallelism:
                    _, _, pod, mode, backoff = heapq.heappop(queue)
                    if watch.gone(pod.uid):  # went meanwhile (e.g. an eviction whose answer was lost)
                        result.evicted.append(pod.key)
                        continue
                    future = pool.submit(self._attempt, pod, mode, started)
                    inflight[future] = (pod, mode, backoff)
                if not inflight and not queue and len(opened) == len(tiers):
                    break
                next_due = queue[0][0] - now_mono if queue else 0.2
                done, _ = concurrent.futures.wait(
                    list(inflight),
                    timeout=max(0.01, min(next_due, 0.2)),
                    return_when=concurrent.futures.FIRST_COMPLETED,
                )
                for future in done:
                    pod, mode, backoff = inflight.pop(future)
                    try:
                        verdict = future.result()
                    except Exception:  # a bug or a hostile answer on one pod must not end the drain
                        log.exception("evicting %s failed unexpectedly; leaving it", pod.key)
                        verdict = FAILED
                    self._settle(pod, verdict, backoff, started, watch, queue, counter, outcome, result)
                self.progress(sum(1 for p in pods if watch.gone(p.uid)), len(pods))
        finally:
            pool.shutdown(wait=True)

    def _open_tiers(self, tiers, by_tier, opened, watch, queue, counter, now_mono, started) -> None:
        for index, tier in enumerate(tiers):
            if tier in opened:
                continue
            earlier = [p for t in tiers[:index] for p in by_tier[t]]
            start_by = min(last_safe_moment(p, started, self.options) for p in by_tier[tier])
            if (
                all(watch.gone(p.uid) for p in earlier)
                or self.clock.now() >= start_by
                or self.options.dry_run
            ):
                opened.add(tier)
                if index > 0:
                    log.info("evicting tier %d (%d critical pods) now", index, len(by_tier[tier]))
                for pod in by_tier[tier]:
                    if pod.terminating:
                        continue  # evicted before a restart: just wait for it
                    heapq.heappush(queue, (now_mono, next(counter), pod, "evict", 0.1))
            break  # tiers open strictly in order

    def _settle(self, pod, verdict, backoff, started, watch, queue, counter, outcome, result) -> None:
        if verdict in (EVICTED, GONE):
            result.evicted.append(pod.key)
            if verdict == GONE:
                watch.mark_gone(pod.uid)
        elif verdict == FORCED:
            result.forced.append(pod.key)
            log.warning("forced %s: PDB still refused at its last safe moment", pod.key)
        elif verdict in (RETRY, FORCE):
            mode = "force" if verdict == FORCE else "evict"
            if verdict == FORCE and not self.options.force_at_deadline:
                result.blocked.append(pod.key)
                log.warning(
                    "left %s: its PDB refused eviction until its last safe moment (FORCE_AT_DEADLINE off)",
                    pod.key,
                )
                return
            safe_at = last_safe_moment(pod, started, self.options)
            delay = 0.0 if verdict == FORCE else retry_delay(backoff, self.clock.now(), safe_at)
            due = self.clock.monotonic() + delay
            heapq.heappush(queue, (due, next(counter), pod, mode, min(RETRY_BACKOFF_MAX_S, backoff * 2)))
        elif verdict == EXPIRED:
            log.error("gave up on %s: the deadline passed", pod.key)
        elif verdict == STOPPED:
            pass
        else:
            result.failed.append(pod.key)

    def _attempt(self, pod: PodInfo, mode: str, started: datetime) -> str:
        if self.should_stop():
            return STOPPED  # asked right before the request: a cancelled response sends no more
        now = self.clock.now()
        if now >= self.options.deadline:
            return EXPIRED
        grace = clamped_grace(pod, now, self.options)
        query = [("dryRun", "All")] if self.options.dry_run else []
        try:
            if mode == "force":
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
                )
                return FORCED
            body: JsonObject = {
                "apiVersion": "policy/v1",
                "kind": "Eviction",
                "metadata": {"name": pod.name, "namespace": pod.namespace},
                "deleteOptions": {"gracePeriodSeconds": grace, "preconditions": {"uid": pod.uid}},
            }
            if self.options.dry_run:
                body["deleteOptions"]["dryRun"] = ["All"]
            self.api.request(
                "POST", f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction", query=query, body=body
            )
            return EVICTED
        except ApiError as error:
            if error.status in (404, 409):
                log.info(
                    "%s was already gone (HTTP %d to its eviction); counted as evicted", pod.key, error.status
                )
                return GONE
            if error.status == 429 and "disruption budget" in error.message.lower():
                return FORCE if self.clock.now() >= last_safe_moment(pod, started, self.options) else RETRY
            if error.reason == "BadBody":
                self._once.first(
                    f"badbody-{pod.key}",
                    f"eviction of {pod.key} got a malformed answer "
                    f"(HTTP {error.status}: {error.message}); retrying",
                )
                return RETRY
            if error.status == 403:
                self._once.first(f"403-{pod.key}", f"not allowed to evict {pod.key}: {error.message}")
                return FAILED
            self._once.first(
                f"api-{error.status}", f"eviction of {pod.key} got HTTP {error.status}; retrying"
            )
            return RETRY
        except KubeError as error:
            self._once.first(
                "unavailable", f"API unreachable while evicting ({error}); retrying until the deadline"
            )
            return RETRY

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
