"""Kubernetes API objects for the simulator: Status errors, timestamps, default objects.

Everything here is pure (no I/O, no locks). Objects are plain dicts in the real API's JSON
shape; the store treats them as immutable, so every change goes through `clone` first.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any, Dict, List, Optional

# ---------------------------------------------------------------------------------------------
# time


def rfc3339(t: Optional[float] = None) -> str:
    """metav1.Time: whole seconds, UTC, 'Z'."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def micro_time(t: Optional[float] = None) -> str:
    """metav1.MicroTime: microseconds, UTC, 'Z'."""
    t = time.time() if t is None else t
    whole = int(t)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + ".%06dZ" % int((t - whole) * 1e6)


def parse_rfc3339(text: str) -> float:
    """Seconds since the epoch for an RFC 3339 time ending in Z (fractions allowed)."""
    import calendar

    text = text.strip()
    if not text.endswith(("Z", "z")):
        raise ValueError("only UTC ('Z') times are supported: %r" % text)
    body = text[:-1]
    frac = 0.0
    if "." in body:
        body, digits = body.split(".", 1)
        frac = float("0." + digits)
    return calendar.timegm(time.strptime(body, "%Y-%m-%dT%H:%M:%S")) + frac


_RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\d)[Tt ](\d\d:\d\d:\d\d)(\.\d+)?([Zz]|[+-]\d\d:?\d\d)?$")


def normal_time(text: Any) -> Any:
    """A metav1.Time as the server would write it back ('+00:00' -> 'Z', whole seconds);
    anything unparseable is returned unchanged."""
    import calendar

    if not isinstance(text, str):
        return text
    m = _RFC3339.match(text.strip())
    if not m:
        return text
    t = calendar.timegm(time.strptime(m.group(1) + "T" + m.group(2), "%Y-%m-%dT%H:%M:%S"))
    offset = m.group(4) or "Z"
    if offset not in ("Z", "z"):
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        t -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return rfc3339(t)


def new_uid() -> str:
    return str(uuid.uuid4())


def clone(obj: Any) -> Any:
    """Deep copy of a JSON value (faster than copy.deepcopy for these shapes)."""
    return json.loads(json.dumps(obj))


def dumps(obj: Any) -> bytes:
    """Compact JSON plus newline, as the API server writes it."""
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# Status errors (k8s.io/apimachinery/pkg/api/errors)


def group_resource(resource: str, group: str = "") -> str:
    return "%s.%s" % (resource, group) if group else resource


def status_body(code: int, reason: str, message: str, details: Optional[dict] = None,
                status: str = "Failure") -> dict:
    body: Dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status}
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details is not None:
        body["details"] = details
    body["code"] = code
    return body


def _details(name: str = "", group: str = "", kind: str = "", causes: Optional[List[dict]] = None,
             retry_after: int = 0) -> dict:
    # field order of metav1.StatusDetails: name, group, kind, uid, causes, retryAfterSeconds
    d: Dict[str, Any] = {}
    if name:
        d["name"] = name
    if group:
        d["group"] = group
    if kind:
        d["kind"] = kind
    if causes:
        d["causes"] = causes
    if retry_after:
        d["retryAfterSeconds"] = retry_after
    return d


class ApiError(Exception):
    """An error the API server answers with a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: Optional[dict] = None,
                 headers: Optional[Dict[str, str]] = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict:
        return status_body(self.code, self.reason, self.message, self.details)


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(404, "NotFound", '%s "%s" not found' % (group_resource(resource, group), name),
                    _details(name=name, group=group, kind=resource))


def no_such_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def forbidden(resource: str, name: str, err: str, group: str = "") -> ApiError:
    gr = group_resource(resource, group)
    if not resource:
        message = "forbidden: %s" % err
    elif not name:
        message = "%s is forbidden: %s" % (gr, err)
    else:
        message = '%s "%s" is forbidden: %s' % (gr, name, err)
    return ApiError(403, "Forbidden", message, _details(name=name, group=group, kind=resource))


def conflict(resource: str, name: str, err: str, group: str = "") -> ApiError:
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": %s'
                    % (group_resource(resource, group), name, err),
                    _details(name=name, group=group, kind=resource))


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    return ApiError(409, "AlreadyExists", '%s "%s" already exists' % (group_resource(resource, group), name),
                    _details(name=name, group=group, kind=resource))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(kind: str, name: str, field: str, message: str, cause: str = "FieldValueInvalid",
            group: str = "") -> ApiError:
    text = "%s: %s" % (field, message)
    return ApiError(422, "Invalid", '%s "%s" is invalid: %s' % (kind, name, text),
                    _details(name=name, group=group, kind=kind,
                             causes=[{"reason": cause, "message": message, "field": field}]))


def unprocessable(message: str) -> ApiError:
    """What a patch that cannot be applied gets (e.g. a failed JSON-patch 'test')."""
    return ApiError(422, "UnprocessableEntity", message)


def internal_error(message: str) -> ApiError:
    return ApiError(500, "InternalError", "Internal error occurred: %s" % message,
                    _details(causes=[{"message": message}]))


def too_many_requests(message: str, retry_after: int = 0, causes: Optional[List[dict]] = None) -> ApiError:
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    return ApiError(429, "TooManyRequests", message, _details(causes=causes, retry_after=retry_after),
                    headers)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def method_not_supported(resource: str, action: str, group: str = "") -> ApiError:
    return ApiError(405, "MethodNotAllowed", '%s is not supported on resources of kind "%s"'
                    % (action, group_resource(resource, group)), _details(group=group, kind=resource))


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: "
                    "application/json-patch+json, application/merge-patch+json, "
                    "application/apply-patch+yaml, application/strategic-merge-patch+json")


def injected_error(code: int) -> ApiError:
    """The error a fault injection answers with, shaped like the real server's answer for that code."""
    if code == 429:
        return too_many_requests("Too many requests, please try again later.", retry_after=1)
    if code == 500:
        return internal_error("injected fault")
    if code == 503:
        return ApiError(503, "ServiceUnavailable", "the server is currently unable to handle the request")
    if code == 504:
        return ApiError(504, "Timeout", "the server was unable to return a response in the time allotted, "
                                        "but may still be processing the request", _details(retry_after=1))
    if code == 401:
        return unauthorized()
    if code == 403:
        return forbidden("", "", "injected fault")
    if code == 404:
        return no_such_path()
    if code == 409:
        return ApiError(409, "Conflict", "injected conflict")
    return ApiError(code, "", "injected fault")


# ---------------------------------------------------------------------------------------------
# default objects

POD_PRIORITIES = {"system-node-critical": 2000001000, "system-cluster-critical": 2000000000}
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"

_OWNER_API_VERSION = {
    "ReplicaSet": "apps/v1", "StatefulSet": "apps/v1", "DaemonSet": "apps/v1", "Deployment": "apps/v1",
    "Job": "batch/v1", "CronJob": "batch/v1", "ReplicationController": "v1", "Node": "v1",
}


def owner_api_version(kind: str) -> str:
    return _OWNER_API_VERSION.get(kind, "apps/v1")


def new_meta(name: str, namespace: Optional[str] = None, labels: Optional[dict] = None,
             annotations: Optional[dict] = None) -> dict:
    meta: Dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["uid"] = new_uid()
    meta["creationTimestamp"] = rfc3339()
    if labels:
        meta["labels"] = dict(labels)
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def make_node(name: str, *, provider_id: Optional[str], labels: Optional[dict], unschedulable: bool,
              kubelet_version: str) -> dict:
    all_labels = {
        "beta.kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
    }
    all_labels.update(labels or {})
    now = rfc3339()
    spec: Dict[str, Any] = {}
    if provider_id:
        spec["providerID"] = provider_id
    if unschedulable:
        spec["unschedulable"] = True
        spec["taints"] = [unschedulable_taint()]
    ready = {"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
             "reason": "KubeletReady", "message": "kubelet is posting ready status"}
    return {
        "apiVersion": "v1", "kind": "Node",
        "metadata": new_meta(name, labels=all_labels, annotations={
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true"}),
        "spec": spec,
        "status": {
            "capacity": {"cpu": "4", "memory": "16131256Ki", "pods": "110"},
            "allocatable": {"cpu": "3920m", "memory": "15113400Ki", "pods": "110"},
            "conditions": [ready],
            "addresses": [{"type": "Hostname", "address": name}],
            "nodeInfo": {"machineID": uuid.uuid4().hex, "systemUUID": str(uuid.uuid4()),
                         "bootID": str(uuid.uuid4()), "kernelVersion": "6.1.140-154.222.amzn2023.x86_64",
                         "osImage": "Amazon Linux 2023.7.20250609", "containerRuntimeVersion": "containerd://1.7.27",
                         "kubeletVersion": kubelet_version, "kubeProxyVersion": "", "operatingSystem": "linux",
                         "architecture": "amd64"},
        },
    }


def unschedulable_taint() -> dict:
    return {"key": UNSCHEDULABLE_TAINT_KEY, "effect": "NoSchedule", "timeAdded": rfc3339()}


def make_pod(name: str, namespace: str, *, node: str, labels: Optional[dict], owner: Optional[dict],
             priority_class: Optional[str], priority: Optional[int], grace_s: int, mirror: bool,
             emptydir: bool, phase: str, ready: bool, annotations: Optional[dict]) -> dict:
    annotations = dict(annotations or {})
    if mirror:
        annotations.setdefault(MIRROR_ANNOTATION, new_uid().replace("-", ""))
        annotations.setdefault("kubernetes.io/config.source", "file")
    meta = new_meta(name, namespace, labels, annotations)
    if owner:
        meta["ownerReferences"] = [owner]
    spec: Dict[str, Any] = {
        "containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                        "resources": {}, "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": grace_s,
        "dnsPolicy": "ClusterFirst",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
        "enableServiceLinks": True,
        "preemptionPolicy": "PreemptLowerPriority",
        "priority": priority if priority is not None else POD_PRIORITIES.get(priority_class or "", 0),
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 300},
        ],
    }
    if node:
        spec["nodeName"] = node
    if priority_class:
        spec["priorityClassName"] = priority_class
    if emptydir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
        spec["containers"][0]["volumeMounts"] = [{"name": "scratch", "mountPath": "/scratch"}]
    now = rfc3339()
    conditions = []
    if node:
        conditions = [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": now},
            {"type": "Ready", "status": "True" if (ready and phase == "Running") else "False",
             "lastProbeTime": None, "lastTransitionTime": now},
        ]
    status: Dict[str, Any] = {"phase": phase, "conditions": conditions, "qosClass": "BestEffort"}
    if node and phase in ("Running", "Succeeded", "Failed"):
        status["startTime"] = now
        state = ({"running": {"startedAt": now}} if phase == "Running" else
                 {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1, "reason":
                                 "Completed" if phase == "Succeeded" else "Error",
                                 "startedAt": now, "finishedAt": now}})
        status["containerStatuses"] = [{
            "name": "main", "image": "registry.k8s.io/pause:3.10", "imageID": "registry.k8s.io/pause@sha256:"
            + "0" * 64, "containerID": "containerd://" + uuid.uuid4().hex + uuid.uuid4().hex,
            "ready": phase == "Running" and ready, "restartCount": 0, "started": phase == "Running",
            "state": state}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def pod_ready(pod: dict) -> bool:
    """podutil.IsPodReady: the Ready condition is True."""
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return c.get("status") == "True"
    return False


def controller_ref(obj: dict) -> Optional[dict]:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref
    return None


def make_daemonset(name: str, namespace: str) -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": dict(new_meta(name, namespace), generation=1),
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10"}]}},
                 "updateStrategy": {"type": "RollingUpdate",
                                    "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}},
        "status": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberMisscheduled": 0,
                   "numberReady": 1, "observedGeneration": 1},
    }


def make_pdb(name: str, namespace: str, *, selector: dict, min_available: Any, max_unavailable: Any,
             unhealthy_pod_eviction_policy: Optional[str]) -> dict:
    spec: Dict[str, Any] = {"selector": selector}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    if unhealthy_pod_eviction_policy:
        spec["unhealthyPodEvictionPolicy"] = unhealthy_pod_eviction_policy
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": dict(new_meta(name, namespace), generation=1), "spec": spec}


def scaled_value(value: Any, total: int, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent."""
    if isinstance(value, bool):
        raise ValueError("invalid int-or-string %r" % (value,))
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        try:
            return int(text)
        except ValueError:
            raise ValueError("invalid value for IntOrString: invalid type: string is not a percentage")
    pct = int(text[:-1])
    exact = pct * total / 100.0
    if round_up:
        import math
        return int(math.ceil(exact))
    return int(exact)
