"""Discovery documents (legacy, unaggregated): enough for the python client and `kubectl drain`.

Aggregated discovery is not offered: clients that ask for it get plain `application/json` and
fall back to the per-group documents, as they do against older servers.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Union

_ALL = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _res(name: str, kind: str, namespaced: bool, verbs: List[str], singular: str = "",
         short: Optional[List[str]] = None, group: str = "", version: str = "") -> dict:
    r: Dict[str, object] = {"name": name, "singularName": singular, "namespaced": namespaced}
    if group or version:
        r["group"], r["version"] = group, version
    r["kind"] = kind
    r["verbs"] = verbs
    if short:
        r["shortNames"] = short
    return r


_CORE = [
    _res("events", "Event", True, _ALL, "event", ["ev"]),
    _res("namespaces", "Namespace", False, ["create", "delete", "get", "list", "patch", "update", "watch"],
         "namespace", ["ns"]),
    _res("nodes", "Node", False, _ALL, "node", ["no"]),
    _res("nodes/status", "Node", False, ["get", "patch", "update"]),
    _res("pods", "Pod", True, _ALL, "pod", ["po"]),
    _res("pods/eviction", "Eviction", True, ["create"], group="policy", version="v1"),
    _res("pods/status", "Pod", True, ["get", "patch", "update"]),
]

_GROUPS: Dict[str, Dict[str, List[dict]]] = {
    "apps": {"v1": [
        _res("daemonsets", "DaemonSet", True, _ALL, "daemonset", ["ds"]),
        _res("daemonsets/status", "DaemonSet", True, ["get", "patch", "update"]),
    ]},
    "authentication.k8s.io": {"v1": [
        _res("selfsubjectreviews", "SelfSubjectReview", False, ["create"], "selfsubjectreview"),
        _res("tokenreviews", "TokenReview", False, ["create"], "tokenreview"),
    ]},
    "authorization.k8s.io": {"v1": [
        _res("selfsubjectaccessreviews", "SelfSubjectAccessReview", False, ["create"], "selfsubjectaccessreview"),
        _res("selfsubjectrulesreviews", "SelfSubjectRulesReview", False, ["create"], "selfsubjectrulesreview"),
    ]},
    "events.k8s.io": {"v1": [_res("events", "Event", True, _ALL, "event", ["ev"])]},
    "policy": {"v1": [
        _res("poddisruptionbudgets", "PodDisruptionBudget", True, _ALL, "poddisruptionbudget", ["pdb"]),
        _res("poddisruptionbudgets/status", "PodDisruptionBudget", True, ["get", "patch", "update"]),
    ]},
}


def _group(name: str) -> dict:
    versions = [{"groupVersion": "%s/%s" % (name, v), "version": v} for v in _GROUPS[name]]
    return {"name": name, "versions": versions, "preferredVersion": versions[0]}


def document(path: str, git_version: str, minor: int) -> Union[dict, str, None]:
    """The JSON (or text) served at a non-resource path, or None for 404."""
    path = path.rstrip("/") or "/"
    if path == "/version":
        return {"major": "1", "minor": str(minor), "emulationMajor": "1", "emulationMinor": str(minor),
                "minCompatibilityMajor": "1", "minCompatibilityMinor": str(minor - 1),
                "gitVersion": git_version, "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24.4",
                "compiler": "gc", "platform": "linux/amd64"}
    if path in ("/healthz", "/livez", "/readyz"):
        return "ok"
    if path == "/api":
        return {"kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]}
    if path == "/api/v1":
        return {"kind": "APIResourceList", "groupVersion": "v1", "resources": _CORE}
    if path == "/apis":
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_group(g) for g in _GROUPS]}
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "apis" and parts[1] in _GROUPS:
        return dict({"kind": "APIGroup", "apiVersion": "v1"}, **_group(parts[1]))
    if len(parts) == 3 and parts[0] == "apis" and parts[1] in _GROUPS and parts[2] in _GROUPS[parts[1]]:
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "%s/%s" % (parts[1], parts[2]),
                "resources": _GROUPS[parts[1]][parts[2]]}
    return None
