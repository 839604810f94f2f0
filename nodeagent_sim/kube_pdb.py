"""PodDisruptionBudgets: the status the disruption controller keeps, and the eviction rule. Pure.

From kubernetes/kubernetes pkg/controller/disruption (status) and
pkg/registry/core/pod/storage/eviction.go (the check). The simulator computes the status live,
under the store lock, at the moment of each eviction; a pod being evicted gets its
deletionTimestamp in the same critical section, which is what the controller's DisruptedPods map
achieves in a real cluster. Simplifications, each on the safe side for a drain:

- the expected pod count behind `maxUnavailable` and percentages is the scale of the pods'
  controllers (by default the number of pods added with that owner); a pod without a controller
  counts as one (the real controller refuses to compute and allows no disruption);
- a nil or empty selector matches no pod for eviction, as in the eviction handler.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Tuple

from .kube_objects import ApiError, controller_ref, pod_ready, scaled_value, too_many_requests
from .kube_select import LabelReq, SelectorError, label_selector_from_object, labels_match

ScaleKey = Tuple[str, str, str]  # (namespace, controller kind, controller name)


def _selector(pdb: dict) -> Optional[List[LabelReq]]:
    try:
        return label_selector_from_object(pdb["spec"].get("selector"))
    except SelectorError:
        return None


def pdbs_for(pod: dict, pdbs: Iterable[dict]) -> List[dict]:
    """The budgets of the pod's namespace whose selector matches it."""
    ns = pod["metadata"]["namespace"]
    labels = pod["metadata"].get("labels") or {}
    out = []
    for pdb in pdbs:
        sel = _selector(pdb)
        if pdb["metadata"]["namespace"] == ns and sel and labels_match(sel, labels):
            out.append(pdb)
    return out


def expected_scale(pods: List[dict], scale: Mapping[ScaleKey, int]) -> int:
    total, seen = 0, set()
    for p in pods:
        ref = controller_ref(p)
        if ref is None:
            total += 1
            continue
        key = (p["metadata"]["namespace"], ref.get("kind", ""), ref.get("name", ""))
        if key in seen:
            continue
        seen.add(key)
        if key in scale:
            total += scale[key]
        else:
            total += sum(1 for q in pods if (controller_ref(q) or {}).get("kind") == key[1]
                         and (controller_ref(q) or {}).get("name") == key[2])
    return total


def pdb_status(pdb: dict, namespace_pods: Iterable[dict], scale: Mapping[ScaleKey, int]) -> Dict[str, int]:
    """currentHealthy / desiredHealthy / expectedPods / disruptionsAllowed."""
    sel = _selector(pdb)
    pods = [] if sel is None else [p for p in namespace_pods if labels_match(sel, p["metadata"].get("labels"))]
    spec = pdb["spec"]
    if spec.get("maxUnavailable") is not None:
        expected = expected_scale(pods, scale)
        desired = max(0, expected - scaled_value(spec["maxUnavailable"], expected, True))
    elif isinstance(spec.get("minAvailable"), int):
        expected, desired = len(pods), spec["minAvailable"]
    elif spec.get("minAvailable") is not None:
        expected = expected_scale(pods, scale)
        desired = scaled_value(spec["minAvailable"], expected, True)
    else:
        expected, desired = len(pods), 0
    healthy = sum(1 for p in pods if not p["metadata"].get("deletionTimestamp") and pod_ready(p))
    return {"currentHealthy": healthy, "desiredHealthy": desired, "expectedPods": expected,
            "disruptionsAllowed": max(0, healthy - desired)}


def with_status(pdb: dict, st: Dict[str, int]) -> dict:
    """The PDB as a GET returns it."""
    generation = pdb["metadata"].get("generation", 1)
    allowed = st["disruptionsAllowed"] > 0
    out = dict(pdb)
    out["status"] = {
        "observedGeneration": generation,
        "disruptionsAllowed": st["disruptionsAllowed"], "currentHealthy": st["currentHealthy"],
        "desiredHealthy": st["desiredHealthy"], "expectedPods": st["expectedPods"],
        "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                        "reason": "SufficientPods" if allowed else "InsufficientPods", "message": "",
                        "observedGeneration": generation,
                        "lastTransitionTime": pdb["metadata"]["creationTimestamp"]}],
    }
    return out


def eviction_refusal(pod: dict, pdb: dict, st: Dict[str, int]) -> Optional[ApiError]:
    """The 429 an eviction gets, or None when the budget lets the pod go.

    An unready pod goes without using up the budget when the PDB's unhealthyPodEvictionPolicy is
    AlwaysAllow, or (the default, IfHealthyBudget) while the budget is healthy."""
    unready = not pod_ready(pod)
    if unready and pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
        return None
    if unready and st["currentHealthy"] >= st["desiredHealthy"] and st["desiredHealthy"] > 0:
        return None
    if st["disruptionsAllowed"] > 0:
        return None
    return too_many_requests(
        "Cannot evict pod as it would violate the pod's disruption budget.",
        causes=[{"reason": "DisruptionBudget",
                 "message": "The disruption budget %s needs %d healthy pods and has %d currently"
                            % (pdb["metadata"]["name"], st["desiredHealthy"], st["currentHealthy"])}])
