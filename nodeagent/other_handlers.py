"""Another termination handler on this node: an aws-node-termination-handler (NTH) pod.

Both would cordon and drain the node on the same notice. nodeagent carries on (a drain is
idempotent: an eviction of a pod the other handler already evicted answers 404 or 409, which the
drain counts as done) and says so once: a log warning, a Kubernetes Event on the Node, and a
problem in `nodeagent status`. Pure: the callers list the pods and write the Event.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from nodeagent.clock import iso_seconds
from nodeagent.jsontypes import JsonObject

NTH = "aws-node-termination-handler"
# The chart labels its pods app.kubernetes.io/name=<name> (nameOverride changes it) and, in its
# DaemonSets, k8s-app=aws-node-termination-handler (fixed); the image name is the same everywhere.
NAME_LABELS = ("app.kubernetes.io/name", "k8s-app")
EVENT_REASON = "OtherTerminationHandler"
EVENT_NAMESPACE = "default"
COMPONENT = "nodeagent"


@dataclass(frozen=True)
class OtherHandler:
    namespace: str
    name: str
    uid: str
    owner_kind: str  # DaemonSet (IMDS mode), ReplicaSet (queue mode), or "" (a bare pod)
    matched_by: str  # which label, the name or the image

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: object) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _matched_by(pod: JsonObject) -> str:
    metadata = _dict(pod.get("metadata"))
    labels = _dict(metadata.get("labels"))
    for label in NAME_LABELS:
        if _text(labels.get(label)) == NTH:
            return f"label {label}={NTH}"
    if _text(metadata.get("name")).startswith(NTH + "-"):
        return "pod name"
    for container in _list(_dict(pod.get("spec")).get("containers")):
        image = _text(_dict(container).get("image"))
        # the image's name, without registry, tag or digest
        if image.rsplit("/", 1)[-1].split("@", 1)[0].split(":", 1)[0] == NTH:
            return f"image {image}"
    return ""


def find_other_handlers(pods: Sequence[JsonObject], node: str) -> list[OtherHandler]:
    """The NTH pods bound to `node` that have not finished. Pure."""
    found = []
    for pod in pods:
        if not isinstance(pod, dict):
            continue
        metadata, spec, status = _dict(pod.get("metadata")), _dict(pod.get("spec")), _dict(pod.get("status"))
        if _text(spec.get("nodeName")) != node or _text(status.get("phase")) in ("Succeeded", "Failed"):
            continue
        how = _matched_by(pod)
        if not how:
            continue
        owners = [_dict(o) for o in _list(metadata.get("ownerReferences"))]
        owner = next((o for o in owners if o.get("controller")), owners[0] if owners else {})
        found.append(
            OtherHandler(
                namespace=_text(metadata.get("namespace")),
                name=_text(metadata.get("name")),
                uid=_text(metadata.get("uid")),
                owner_kind=_text(owner.get("kind")),
                matched_by=how,
            )
        )
    return sorted(found, key=lambda handler: handler.key)


def warning_text(found: Sequence[OtherHandler], node: str) -> str:
    """The one message: log line, Event and status problem."""
    pods = ", ".join(f"{h.key} ({h.matched_by})" for h in found)
    queue = any(h.owner_kind in ("ReplicaSet", "Deployment") for h in found)
    return (
        f"aws-node-termination-handler runs on node {node}: {pods}. Both handlers would cordon and "
        "drain this node on the same notice; nodeagent carries on (evictions of pods already evicted "
        "answer 404/409 and count as done). Keep NTH off nodes that run nodeagent "
        "(docs/migrating-from-nth.md)"
        + ("; a queue-mode NTH acts on every node of the cluster, wherever it runs" if queue else "")
    )


def event_name(node: str, found: Sequence[OtherHandler]) -> str:
    """Stable for the same pods on the same node: a restarted agent does not write a second one."""
    digest = hashlib.sha256("\0".join([node, *sorted(h.uid or h.key for h in found)]).encode()).hexdigest()
    return f"{node[:230]}.nth-{digest[:12]}"


def event_body(node: str, found: Sequence[OtherHandler], message: str, when: datetime) -> JsonObject:
    """A core/v1 Warning Event about the Node, written as nodeagent's other Events are."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(node, found), "namespace": EVENT_NAMESPACE},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node},
        "reason": EVENT_REASON,
        "message": message[:1024],
        "type": "Warning",
        "count": 1,
        "firstTimestamp": iso_seconds(when),
        "lastTimestamp": iso_seconds(when),
        "source": {"component": COMPONENT, "host": node},
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
    }
