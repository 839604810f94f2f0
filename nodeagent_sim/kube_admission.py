"""Node validation and the NodeRestriction admission plugin's rules for node updates. Pure.

From kubernetes/kubernetes plugin/pkg/admission/noderestriction/admission.go (admitNode) and
k8s.io/kubelet/pkg/apis/well_known_labels.go (IsKubeletLabel). A node user may change neither its
taints nor labels in the kubernetes.io / k8s.io namespaces outside the kubelet's own set, nor any
label under node-restriction.kubernetes.io; it may touch only its own Node.
"""

from __future__ import annotations

import json
import re
from typing import Any, Dict, List, Optional, Tuple

from .kube_objects import bad_request, conflict, forbidden, invalid, normal_time

_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "kubernetes.io/os",
    "kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
})


def _label_ns(key: str) -> str:
    return key.split("/", 1)[0] if "/" in key else ""


def _in_ns(ns: str, domain: str) -> bool:
    return ns == domain or ns.endswith("." + domain)


def is_kubelet_label(key: str) -> bool:
    """k8s.io/kubelet/pkg/apis.IsKubeletLabel."""
    ns = _label_ns(key)
    return key in _KUBELET_LABELS or _in_ns(ns, "kubelet.kubernetes.io") or _in_ns(ns, "node.kubernetes.io")


def forbidden_node_labels(old: Dict[str, str], new: Dict[str, str]) -> List[str]:
    """NodeRestriction getForbiddenLabels over the labels a node user changed."""
    changed = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    bad = []
    for key in changed:
        ns = _label_ns(key)
        if _in_ns(ns, "node-restriction.kubernetes.io"):
            bad.append(key)
        elif (_in_ns(ns, "kubernetes.io") or _in_ns(ns, "k8s.io")) and not is_kubelet_label(key):
            bad.append(key)
    return sorted(bad)


def validate_label_key(key: str) -> Optional[str]:
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "prefix part must be a lowercase RFC 1123 subdomain"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
                "and end with an alphanumeric character")
    return None


def taints_normal(taints: Any) -> List[Tuple[str, str, str, str]]:
    """Taints for a semantic comparison (timeAdded compared as a time, not as text)."""
    return [(str(t.get("key", "")), str(t.get("value", "") or ""), str(t.get("effect", "")),
             str(normal_time(t.get("timeAdded")) or "")) for t in (taints or []) if isinstance(t, dict)]



def check_node_update(node_user: Optional[str], current: dict, new: dict, require_rv: bool) -> dict:
    """Everything between a decoded node update and storage: preconditions, the fields the server
    owns, validation, and (for a node user) NodeRestriction. Returns the object to store."""
    name = current["metadata"]["name"]
    meta = new.get("metadata")
    if not isinstance(meta, dict):
        raise invalid("Node", name, "metadata", "Required value")
    rv = meta.get("resourceVersion")
    if rv and rv != current["metadata"]["resourceVersion"]:
        raise conflict("nodes", name, "the object has been modified; please apply your changes to the "
                                      "latest version and try again")
    if require_rv and not rv:
        raise invalid("Node", name, "metadata.resourceVersion",
                      "Invalid value: 0x0: must be specified for an update", "FieldValueInvalid")
    if meta.get("name") != name:
        raise invalid("Node", name, "metadata.name", "Invalid value: %s: field is immutable"
                      % json.dumps(meta.get("name")))
    meta["uid"] = current["metadata"]["uid"]
    meta["creationTimestamp"] = current["metadata"]["creationTimestamp"]
    meta["resourceVersion"] = current["metadata"]["resourceVersion"]
    new["kind"], new["apiVersion"] = "Node", "v1"
    new.setdefault("spec", {})
    new.setdefault("status", current.get("status", {}))
    validate_node(name, current, new)
    node = node_user
    if node is not None:  # NodeRestriction admitNode
        if node != name:
            raise forbidden("nodes", name, 'node "%s" is not allowed to modify node "%s"' % (node, name))
        if taints_normal(new["spec"].get("taints")) != taints_normal(current["spec"].get("taints")):
            raise forbidden("nodes", name, 'node "%s" is not allowed to modify taints' % node)
        bad = forbidden_node_labels(current["metadata"].get("labels") or {}, meta.get("labels") or {})
        if bad:
            raise forbidden("nodes", name, "is not allowed to modify labels: %s" % ", ".join(bad))
    return new


def validate_node(name: str, current: dict, new: dict) -> None:
    """Node validation (the parts a patch can get wrong); normalises taint times in place."""
    meta, spec = new["metadata"], new["spec"]
    for field_name in ("labels", "annotations"):
        values = meta.get(field_name)
        if values is None:
            continue
        if not isinstance(values, dict) or not all(isinstance(v, str) for v in values.values()):
            raise bad_request("Node in version \"v1\" cannot be handled as a Node: json: cannot unmarshal "
                              "into Go struct field ObjectMeta.metadata.%s of type string" % field_name)
        for key, value in values.items():
            problem = validate_label_key(key)
            if problem:
                raise invalid("Node", name, "metadata.%s" % field_name,
                              'Invalid value: "%s": %s' % (key, problem))
            if field_name == "labels" and value and (len(value) > 63 or not _LABEL_NAME.match(value)):
                raise invalid("Node", name, "metadata.labels",
                              'Invalid value: "%s": a valid label must be an empty string or consist of '
                              "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                              "alphanumeric character" % value)
    if "unschedulable" in spec and not isinstance(spec["unschedulable"], bool):
        raise bad_request("Node in version \"v1\" cannot be handled as a Node: json: cannot unmarshal %s "
                          "into Go struct field NodeSpec.spec.unschedulable of type bool"
                          % type(spec["unschedulable"]).__name__)
    old_provider = current["spec"].get("providerID", "")
    if old_provider and spec.get("providerID", "") != old_provider:
        raise invalid("Node", name, "spec.providerID",
                      'Forbidden: node updates may not change providerID except from "" to valid',
                      "FieldValueForbidden")
    taints = spec.get("taints")
    if taints is None:
        return
    if not isinstance(taints, list):
        raise bad_request("json: cannot unmarshal into Go struct field NodeSpec.spec.taints of type []v1.Taint")
    if not taints:
        del spec["taints"]  # omitempty
        return
    seen = set()
    for i, taint in enumerate(taints):
        if isinstance(taint, dict) and taint.get("timeAdded"):
            taint["timeAdded"] = normal_time(taint["timeAdded"])
        if not isinstance(taint, dict) or not taint.get("key"):
            raise invalid("Node", name, "metadata.taints[%d].key" % i, "Required value", "FieldValueRequired")
        effect = taint.get("effect", "")
        if effect not in _TAINT_EFFECTS:
            raise invalid("Node", name, "metadata.taints[%d].effect" % i,
                          'Unsupported value: "%s": supported values: "NoSchedule", "PreferNoSchedule", '
                          '"NoExecute"' % effect, "FieldValueNotSupported")
        if (taint["key"], effect) in seen:
            raise invalid("Node", name, "metadata.taints[%d]" % i,
                          'Duplicate value: "%s:%s"' % (taint["key"], effect), "FieldValueDuplicate")
        seen.add((taint["key"], effect))
