"""Drain this node's pods by a deadline: select, order in tiers, evict in parallel, clamp grace,
retry PDB refusals, force at the last safe moment, and wait for deletions with one watch.

`select_pods`, `last_safe_moment` and `retry_delay` are pure; Drainer does the I/O. Every request
goes through the API client's gate (gate.py) at drain priority, carrying its pod's last safe
moment, so a throttled server holds the drain back until then and no longer. While nothing is
due, the drain sleeps until the next retry, answer, watch event or stop check.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable

from nodeagent import jitter
from nodeagent.clock import Clock, SystemClock
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import ApiError, KubeApi, KubeError, RequestAbandoned
from nodeagent.kube.gate import Priority
from nodeagent.kube.throttle import is_pdb_refusal
from nodeagent.log_once import LogOnce
from nodeagent.retry import Backoff, Failure, retry

log = logging.getLogger("nodeagent.kube.drain")

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
RETRY_BACKOFF_MAX_S = 1.0
FINISHED_PHASES = ("Succeeded", "Failed")
# Retry pacing (retry_delay): within NEAR_S of the last safe moment a refused pod is retried
# about once a second (a PDB frees up as soon as a replacement is ready); further out, never
# more often than this share of the time left, up to a cap.
NEAR_S = 600.0
RETRY_SHARE_OF_TIME_LEFT = 0.1
RETRY_GAP_MAX_S = 60.0
STOP_CHECK_S = 0.5  # an idle drain looks at its stop flag this often


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
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (namespace/name, what is wrong)


class MalformedPod(ValueError):
    pass


def select_pods(pods: Sequence[JsonObject], options: DrainOptions) -> Selection:
    """Which of the node's pods to evict, and in which tier. Pure.

    Each pod is judged on its own: one that cannot be read (a field of the wrong type) is set
    aside in `malformed`, and the others are drained."""
    selection = Selection()
    for pod in pods:
        key = _pod_key(pod)
        try:
            verdict = _judge(pod, options)
        except (MalformedPod, TypeError, ValueError, AttributeError, OverflowError) as error:
            selection.malformed.append((key, f"{type(error).__name__}: {error}"[:200]))
            continue
        if isinstance(verdict, PodInfo):
            selection.evict.append(verdict)
        else:
            selection.skipped.append((key, verdict))
    return selection


def _pod_key(pod: object) -> str:
    metadata = pod.get("metadata") if isinstance(pod, dict) else None
    if not isinstance(metadata, dict):
        return "?/?"
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"[:300]


def _mapping(value: object, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPod(f"{what} is not an object")
    return value


def _judge(pod: JsonObject, options: DrainOptions) -> PodInfo | str:
    """The pod to evict, or why it is left alone."""
    if not isinstance(pod, dict):
        raise MalformedPod("not an object")
    metadata = _mapping(pod.get("metadata"), "metadata")
    spec = _mapping(pod.get("spec"), "spec")
    status = _mapping(pod.get("status"), "status")
    annotations = _mapping(metadata.get("annotations"), "metadata.annotations")
    owners = metadata.get("ownerReferences") or []
    if not isinstance(owners, list) or not all(isinstance(owner, dict) for owner in owners):
        raise MalformedPod("metadata.ownerReferences is not a list of objects")
    if MIRROR_ANNOTATION in annotations:
        return "mirror pod"
    if any(owner.get("kind") == "DaemonSet" for owner in owners):
        return "DaemonSet pod"
    if status.get("phase") in FINISHED_PHASES:
        return "finished"
    if not options.evict_unmanaged and not any(owner.get("controller") for owner in owners):
        return "unmanaged (EVICT_UNMANAGED=false)"
    volumes = spec.get("volumes") or []
    if not isinstance(volumes, list):
        raise MalformedPod("spec.volumes is not a list")
    if not options.evict_local_storage and any(isinstance(v, dict) and "emptyDir" in v for v in volumes):
        return "emptyDir (EVICT_LOCAL_STORAGE=false)"
    grace = spec.get("terminationGracePeriodSeconds")
    if grace is not None and (isinstance(grace, bool) or not isinstance(grace, int) or grace < 0):
        raise MalformedPod(f"terminationGracePeriodSeconds is {grace!r}, not a whole number of seconds")
    name, namespace, uid = metadata.get("name"), metadata.get("namespace", ""), metadata.get("uid", "")
    if not isinstance(name, str) or not name or not isinstance(namespace, str) or not isinstance(uid, str):
        raise MalformedPod("metadata.name, namespace or uid is missing or not a string")
    return PodInfo(
        namespace=namespace,
        name=name,
        uid=uid,
        grace_s=30 if grace is None else grace,
        tier=1 if spec.get("priorityClassName") in options.last_tier_classes else 0,
        terminating=bool(metadata.get("deletionTimestamp")),
    )


def last_safe_moment(pod: PodInfo, drain_started: datetime, options: DrainOptions) -> datetime:
    """The latest moment a PDB-blocked pod is retried before it is forced (or given up).

    Retrying stops early enough that a forced delete still gives the pod its own grace, but never
    more than half the drain window, so a 600 s grace cannot end the retries at once.
    """
    window = max(0.0, (options.pods_gone_by - drain_started).total_seconds())
    reserve = min(float(pod.grace_s), window / 2)
    return options.pods_gone_by - timedelta(seconds=reserve)


def retry_delay(backoff_s: float, now: datetime, last_safe: datetime, rng: random.Random) -> float:
    """Seconds until a refused (or failed) eviction is tried again. Pure, given its random source.

    Within NEAR_S of the last safe moment: the backoff (0.1 s doubling to 1 s) with equal jitter,
    about once a second, since a PDB frees up as soon as a replacement is ready. Further out: a
    tenth of the time left, capped at a minute, stretched by up to a fifth, so a two-day maintenance
    window costs about one try a minute per blocked pod. Never past the last safe moment: a PDB that
    frees up late is still honoured there (docs/notices.md has the worst case).
    """
    left = (last_safe - now).total_seconds()
    if left <= 0:
        return 0.0
    if left <= NEAR_S:
        gap = jitter.spread(backoff_s, rng)
    else:
        gap = jitter.stretch(max(backoff_s, min(RETRY_GAP_MAX_S, RETRY_SHARE_OF_TIME_LEFT * left)), rng)
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
    malformed: list[str] = field(default_factory=list)  # could not be read: left on the node
    skipped: int = 0
    requests: int = 0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.left and not self.failed and not self.interrupted


class PodWatch:
    """Which of our pods are still on the node, kept current by one watch (re-listed on breaks)."""

    def __init__(
        self,
        api: KubeApi,
        node: str,
        uids: set[str],
        resource_version: str,
        on_change: Callable[[], None] = lambda: None,
    ):
        self.api = api
        self.node = node
        self.on_change = on_change  # wakes the drain
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
        self.on_change()

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
        for event in self.api.stream_lines(
            "/api/v1/pods", query, read_timeout_s=330, give_up=self._stop.is_set
        ):
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
            items, resource_version = self.api.list_all(
                "/api/v1/pods", [("fieldSelector", f"spec.nodeName={self.node}")], give_up=self._stop.is_set
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
        still_here = {_pod_uid(pod) for pod in items}
        with self._cond:
            self.present &= still_here
            self.changes += 1
            self._cond.notify_all()
        self.on_change()
        self._rv = resource_version


def _pod_uid(pod: JsonObject) -> str:
    metadata = pod.get("metadata")
    return str(metadata.get("uid")) if isinstance(metadata, dict) else ""


class _Ended(Exception):
    """The deadline passed or a stop came: no more attempts to list."""


# Outcomes of one attempt on one pod.
EVICTED, GONE, RETRY, THROTTLED, FORCE, FORCED, BLOCKED, FAILED, EXPIRED, STOPPED = (
    "evicted",
    "gone",
    "retry",
    "throttled",
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
        rng: random.Random | None = None,
        on_listed: Callable[[list[JsonObject]], None] = lambda pods: None,
    ):
        self.api = api
        self.on_listed = on_listed  # sees the node's pods as listed (the responder looks for NTH)
        self.node = node
        self.options = options
        self.progress = progress
        self.should_stop = should_stop  # a cancel, a supersede or the agent's stop
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self._once = LogOnce(log)
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
        pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.options.parallelism, thread_name_prefix="evict"
        )
        inflight: dict[concurrent.futures.Future, tuple[PodInfo, str, float]] = {}
        gone_reported = -1
        try:
            while True:
                with self._wake:
                    seen = self._wakes
                if self.should_stop():
                    result.interrupted = True
                    break
                for future in [f for f in inflight if f.done()]:
                    pod, mode, backoff = inflight.pop(future)
                    try:
                        verdict = future.result()
                    except Exception:  # a bug or a hostile answer on one pod must not end the drain
                        log.exception("evicting %s failed unexpectedly; leaving it", pod.key)
                        verdict = FAILED
                    self._settle(pod, verdict, backoff, started, watch, queue, counter, result)
                now_mono = self.clock.monotonic()
                tier_opens_in = self._open_tiers(
                    tiers, by_tier, opened, watch, queue, counter, now_mono, started
                )
                while queue and queue[0][0] <= now_mono and len(inflight) < self.options.parallelism:
                    _, _, pod, mode, backoff = heapq.heappop(queue)
                    if watch.gone(pod.uid):  # went meanwhile (e.g. an eviction whose answer was lost)
                        result.evicted.append(pod.key)
                        continue
                    future = pool.submit(self._attempt, pod, mode, started)
                    inflight[future] = (pod, mode, backoff)
                    future.add_done_callback(lambda _: self._poke())
                gone = sum(1 for p in pods if watch.gone(p.uid))
                if gone != gone_reported:
                    self.progress(gone, len(pods))
                    gone_reported = gone
                if not inflight and not queue and len(opened) == len(tiers):
                    break
                self._sleep_until_something(seen, queue, tier_opens_in, now_mono, len(inflight))
        finally:
            pool.shutdown(wait=True)

    def _sleep_until_something(
        self,
        seen: int,
        queue: list[tuple[float, int, PodInfo, str, float]],
        tier_opens_in: float | None,
        now_mono: float,
        inflight: int,
    ) -> None:
        """Sleep until the next due retry, an answer, a watch change or the next stop check:
        never spin while requests wait on the server or pods wait on their PDB."""
        bounds = [STOP_CHECK_S]
        if queue and inflight < self.options.parallelism:
            bounds.append(queue[0][0] - now_mono)
        if tier_opens_in is not None:
            bounds.append(tier_opens_in)
        with self._wake:
            if self._wakes == seen:
                self._wake.wait(max(0.0, min(bounds)))

    def _open_tiers(self, tiers, by_tier, opened, watch, queue, counter, now_mono, started) -> float | None:
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
                    if pod.terminating:
                        continue  # evicted before a restart: just wait for it
                    heapq.heappush(queue, (now_mono, next(counter), pod, "evict", 0.1))
                continue  # the next tier may open at once too (its own time may have come)
            return (start_by - now).total_seconds()
        return None

    def _settle(self, pod, verdict, backoff, started, watch, queue, counter, result) -> None:
        if verdict in (EVICTED, GONE):
            result.evicted.append(pod.key)
            if verdict == GONE:
                watch.mark_gone(pod.uid)
        elif verdict == FORCED:
            result.forced.append(pod.key)
            log.warning("forced %s: PDB still refused at its last safe moment", pod.key)
        elif verdict in (RETRY, FORCE, THROTTLED):
            mode = "force" if verdict == FORCE else "evict"
            if verdict == FORCE and not self.options.force_at_deadline:
                result.blocked.append(pod.key)
                log.warning(
                    "left %s: its PDB refused eviction until its last safe moment (FORCE_AT_DEADLINE off)",
                    pod.key,
                )
                return
            safe_at = last_safe_moment(pod, started, self.options)
            # A throttled eviction is sent again as soon as the gate lets it: the gate holds the
            # server's pause for every request of this node.
            delay = (
                0.0
                if verdict in (FORCE, THROTTLED)
                else retry_delay(backoff, self.clock.now(), safe_at, self.rng)
            )
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
        safe_at = last_safe_moment(pod, started, self.options)
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
                    priority=Priority.DRAIN,
                    act_by=now,
                    give_up=self.should_stop,
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
                "POST",
                f"/api/v1/namespaces/{pod.namespace}/pods/{pod.name}/eviction",
                query=query,
                body=body,
                priority=Priority.DRAIN,
                act_by=safe_at,
                give_up=self.should_stop,
            )
            return EVICTED
        except RequestAbandoned:
            return STOPPED
        except ApiError as error:
            if error.status in (404, 409):
                log.info(
                    "%s was already gone (HTTP %d to its eviction); counted as evicted", pod.key, error.status
                )
                return GONE
            if is_pdb_refusal(error.status, error.message):
                return FORCE if self.clock.now() >= safe_at else RETRY
            if error.throttling:
                return THROTTLED
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
