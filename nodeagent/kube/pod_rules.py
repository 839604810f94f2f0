"""Which pods a drain evicts, in which tier, and when: the pure rules (no I/O, no clock reads).

- `select_pods`: DaemonSet, mirror and finished pods stay; each pod is judged on its own, and one
  that cannot be read is set aside, not allowed to fail the drain.
- `last_safe_moment`: the latest moment a PDB-refused pod is retried before it is forced.
- `retry_delay`: the pacing of those retries, about once a second near the last safe moment,
  about once a minute far from it, jittered.
- `clamped_grace`: a pod's grace, never past the moment pods must be gone.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from nodeagent import jitter
from nodeagent.jsontypes import JsonObject

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
FINISHED_PHASES = ("Succeeded", "Failed")
RETRY_BACKOFF_FIRST_S = 0.1
RETRY_BACKOFF_MAX_S = 1.0
PROBE_BACKOFF_MAX_S = 0.3  # one pod per disruption budget (eviction_queue.py) is tried about 4 times as often
# Retry pacing (retry_delay): within NEAR_S of the last safe moment a refused pod is retried
# about once a second (a PDB frees up as soon as a replacement is ready); further out, never
# more often than this share of the time left, up to a cap.
NEAR_S = 600.0
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
