"""Kubernetes Events (core/v1) on this node's Node object, written with the node's own credentials.

Node credentials may create and patch core/v1 events but may not list or get them, so the
aggregation is ours: one Event per (notice, reason), named deterministically; a repeat of the same
reason for the same notice PATCHes `count`, `lastTimestamp` and `message` of that Event instead of
creating another. That keeps a notice to a handful of Events however often a step repeats (a drain
resumed after a restart, a second uncordon).

Reasons (filter with `kubectl get events --field-selector involvedObject.name=<node>,reason=<R>`):
SpotInterruptionNotice, RebalanceRecommendation, ScheduledMaintenance, ASGTermination (the notice),
NodeCordoned, DrainStarted, DrainFinished, DrainFailed, NodeUncordoned, NoticeCancelled; with
ASG_LIFECYCLE_HOOK also LifecycleActionHeartbeat, LifecycleActionCompleted, LifecycleActionFailed.

Events go to the `default` namespace with involvedObject {kind: Node, name: <node>, uid: <node>},
as the kubelet writes its own node events, so `kubectl describe node` lists them too. They are sent
from a background thread, retried with backoff until the notice's deadline, and written with
dryRun=All when DRY_RUN is on.

Events never cost an eviction: they pass the API gate at the lowest priority, so under throttling
they wait behind the drain and the node's own writes. While one (notice, reason) is still waiting
to go out, later ones for it are coalesced into it: the one write that goes carries the newest
message and the count of all of them.

What is kept to aggregate goes when the agent forgets the notice's record, or an hour after the
last write for it could go out (the API server keeps Events for an hour), whichever comes first.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from nodeagent.clock import iso_seconds, utcnow
from nodeagent.config import Settings
from nodeagent.kube.client import MERGE_PATCH
from nodeagent.kube.errors import ApiError, KubeError
from nodeagent.kube.gate import Priority
from nodeagent.log_once import LogOnce
from nodeagent.ports import KubeLink
from nodeagent.report.webhook_message import KIND_TEXT
from nodeagent.report.worker import WorkerReporter
from nodeagent.retry import Backoff, Failure, retry
from nodeagent.timefmt import parse_optional_rfc3339

log = logging.getLogger("nodeagent.report.events")

NAMESPACE = "default"
COMPONENT = "nodeagent"
NOTICE_REASONS = {
    "spot-itn": "SpotInterruptionNotice",
    "rebalance": "RebalanceRecommendation",
    "scheduled": "ScheduledMaintenance",
    "asg": "ASGTermination",
}
STEP_REASONS = {
    "Cordoned": "NodeCordoned",
    "DrainStarted": "DrainStarted",
    "DrainFinished": "DrainFinished",
    "DrainFailed": "DrainFailed",
    "Uncordoned": "NodeUncordoned",
    # ASG_LIFECYCLE_HOOK (nodeagent/lifecycle_hook.py)
    "LifecycleHeartbeat": "LifecycleActionHeartbeat",
    "LifecycleCompleted": "LifecycleActionCompleted",
    "LifecycleFailed": "LifecycleActionFailed",
    "LifecycleHeartbeatFailed": "LifecycleActionFailed",
}
CANCELLED_REASON = "NoticeCancelled"
WARNING_REASONS = frozenset(NOTICE_REASONS.values()) | {"DrainFailed", "LifecycleActionFailed"}
ALL_REASONS = tuple(NOTICE_REASONS.values()) + tuple(STEP_REASONS.values()) + (CANCELLED_REASON,)
MAX_MESSAGE = 1024
MIN_RETRY_WINDOW_S = 30.0
EVENT_TTL_S = 3600.0  # the API server's default --event-ttl


def event_name(node: str, notice_id: str, reason: str) -> str:
    """Stable per (node, notice, reason): a restarted agent finds its own Event again."""
    digest = hashlib.sha256(f"{node}\0{notice_id}\0{reason}".encode()).hexdigest()[:16]
    return f"{node[:230]}.{digest}"


def event_body(
    name: str, node: str, reason: str, message: str, count: int, first: datetime, last: datetime
) -> dict[str, object]:
    """A core/v1 Event about the Node. Pure."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": NAMESPACE},
        # uid = the node's name, as the kubelet does for node events (kubectl describe node
        # searches by both the real uid and the name).
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": reason,
        "message": message[:MAX_MESSAGE],
        "type": "Warning" if reason in WARNING_REASONS else "Normal",
        "count": count,
        "firstTimestamp": iso_seconds(first),
        "lastTimestamp": iso_seconds(last),
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
    }


def notice_message(record, drill: bool) -> str:

    deadline = parse_optional_rfc3339(record.deadline)
    text = (
        f"{KIND_TEXT.get(record.kind, record.kind)} {record.id} ({record.action}), "
        f"deadline {iso_seconds(deadline) if deadline else record.deadline}; response: {record.response}"
    )
    if record.outcome:
        text += f" ({record.outcome})"
    return ("[drill] " if drill else "") + text


@dataclass
class _Aggregate:
    name: str
    count: int
    first: datetime
    created: bool = False
    message: str = ""  # the newest, sent with the next write
    last: datetime | None = None
    give_up_at: float = 0.0  # monotonic
    queued: bool = False  # a write for it waits in the worker: later ones coalesce into it


class _NotReady(Exception):
    """The responder has no API client or node yet."""


def _transient(error: BaseException) -> bool:
    if isinstance(error, ApiError):
        return error.status >= 500 or error.status == 429
    return isinstance(error, (KubeError, _NotReady))


class EventsReporter(WorkerReporter):
    def __init__(
        self,
        settings: Settings,
        kube: KubeLink,
        *,
        drill: bool = False,
        close_timeout_s: float = 3.0,
    ):
        super().__init__("events", close_timeout_s)
        self.settings = settings
        self.kube = kube
        self.drill = drill
        self._lock = threading.Lock()
        self._aggregates: dict[tuple[str, str], _Aggregate] = {}
        self._once = LogOnce(log)
        self.sent = 0
        self.failed = 0

    # ---- Reporter

    def notice_received(self, notice, record, plan) -> None:
        self._emit(
            record, NOTICE_REASONS.get(record.kind, "InterruptionNotice"), notice_message(record, self.drill)
        )

    def step(self, record, reason: str, message: str) -> None:
        self._emit(record, STEP_REASONS.get(reason, reason), ("[drill] " if self.drill else "") + message)

    def finished(self, record) -> None:
        pass  # DrainFinished / DrainFailed / NodeCordoned already carry the outcome

    def cancelled(self, record) -> None:
        self._emit(
            record,
            CANCELLED_REASON,
            ("[drill] " if self.drill else "") + f"notice {record.id} cancelled: {record.outcome}",
        )

    def forgotten(self, notice_ids: tuple[str, ...]) -> None:
        # A write still queued keeps its own aggregate and goes out; only the index lets go.
        gone = set(notice_ids)
        with self._lock:
            for key in [key for key in self._aggregates if key[0] in gone]:
                del self._aggregates[key]

    # ---- sending

    def _emit(self, record, reason: str, message: str) -> None:
        now = utcnow()
        deadline = parse_optional_rfc3339(record.deadline)
        to_deadline = 0.0 if deadline is None else (deadline - now).total_seconds()
        # Until the deadline (after it the instance is gone: nothing more is written); a notice
        # whose deadline has already passed (a late cancellation) still gets MIN_RETRY_WINDOW_S.
        give_up_at = time.monotonic() + (to_deadline if to_deadline > 0 else MIN_RETRY_WINDOW_S)
        with self._lock:
            key = (record.id, reason)
            aggregate = self._aggregates.get(key)
            if aggregate is None:
                self._forget_expired(time.monotonic())
                aggregate = self._aggregates[key] = _Aggregate(name="", count=0, first=now)
            aggregate.count += 1
            aggregate.message, aggregate.last = message, now
            aggregate.give_up_at = max(aggregate.give_up_at, give_up_at)
            if aggregate.queued:  # folded into the write that has not gone out yet
                return
            aggregate.queued = True
        self.worker.submit(lambda: self._send(aggregate, record.id, reason))

    def _forget_expired(self, now_mono: float) -> None:
        """Drop what is kept of Events the API server has dropped too (it keeps them for an hour):
        a repeat after that creates a new Event anyway. Called with the lock held."""
        for key in [
            key
            for key, aggregate in self._aggregates.items()
            if not aggregate.queued and aggregate.give_up_at + EVENT_TTL_S < now_mono
        ]:
            del self._aggregates[key]

    def _send(self, aggregate: _Aggregate, notice_id: str, reason: str) -> None:
        def attempt() -> bool:
            target = self.kube.api_and_node()
            if target is None:
                raise _NotReady("Kubernetes is not ready yet")
            api, node = target
            with self._lock:  # the newest message and count; an emit from now on queues anew
                aggregate.queued = False
                message, count, when = aggregate.message, aggregate.count, aggregate.last or aggregate.first
            self._write(api, node, aggregate, notice_id, reason, message, count, when)
            return True

        def gave_up(failure: Failure[bool]) -> bool:
            self._give_up(reason, str(failure.error))
            return False

        try:
            sent = retry(
                attempt,
                schedule=Backoff(0.5, 5.0),
                transient=_transient,
                stop=lambda failure: time.monotonic() + failure.wait_s >= aggregate.give_up_at,
                sleep=self.worker.sleep,  # False once the reporter is closing
                gave_up=gave_up,
            )
        except ApiError as error:  # refused (4xx other than 429): retrying cannot help
            self._give_up(reason, f"HTTP {error.status} {error.reason}: {error.message}")
            return
        if sent:
            self.sent += 1

    def _write(
        self,
        api,
        node: str,
        aggregate: _Aggregate,
        notice_id: str,
        reason: str,
        message: str,
        count: int,
        when: datetime,
    ) -> None:
        name = aggregate.name or event_name(node, notice_id, reason)
        aggregate.name = name
        query = (("dryRun", "All"),) if self.settings.dry_run else ()
        path = f"/api/v1/namespaces/{NAMESPACE}/events"
        if not aggregate.created:
            body = event_body(name, node, reason, message, count, aggregate.first, when)
            try:
                api.request("POST", path, query=query, body=body, priority=Priority.EVENT)
                aggregate.created = True
                log.debug("event %s created", reason)
                return
            except ApiError as error:
                if error.status != 409:
                    raise
                # Written by an earlier run of this agent: aggregate onto it.
                aggregate.created = True
                count = max(count, 2)
        patch = {"count": count, "lastTimestamp": iso_seconds(when), "message": message[:MAX_MESSAGE]}
        try:
            api.request(
                "PATCH",
                f"{path}/{name}",
                query=query,
                body=patch,
                content_type=MERGE_PATCH,
                priority=Priority.EVENT,
            )
        except ApiError as error:
            if error.status != 404:
                raise
            # Expired (the API server keeps events for an hour) or a dry run: create it again.
            body = event_body(name, node, reason, message, count, aggregate.first, when)
            api.request("POST", path, query=query, body=body, priority=Priority.EVENT)

    def _give_up(self, reason: str, problem: str) -> None:
        self.failed += 1
        self._once.say(reason, f"could not write the {reason} event: {problem}")
