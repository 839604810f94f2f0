"""The pure half of the drain: which pods, which tier, what grace, when to force."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from nodeagent.kube.pod_rules import DrainOptions, PodInfo, clamped_grace, last_safe_moment, select_pods

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def options(**overrides) -> DrainOptions:
    values = dict(deadline=NOW + timedelta(seconds=120), margin_s=15, force_at_deadline=True)
    values.update(overrides)
    return DrainOptions(**values)


def pod(name, *, owner=None, mirror=False, phase="Running", priority=None, grace=None, emptydir=False, terminating=False):
    metadata = {"name": name, "namespace": "default", "uid": f"uid-{name}"}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner, "name": "x", "controller": True}]
    if mirror:
        metadata["annotations"] = {"kubernetes.io/config.mirror": "abc"}
    if terminating:
        metadata["deletionTimestamp"] = "2026-01-01T12:00:00Z"
    spec = {"nodeName": "me"}
    if priority:
        spec["priorityClassName"] = priority
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    if emptydir:
        spec["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    return {"metadata": metadata, "spec": spec, "status": {"phase": phase}}


def test_selection_skips_daemonset_mirror_and_finished():
    pods = [pod("web", owner="ReplicaSet"), pod("ds", owner="DaemonSet"), pod("static", mirror=True),
            pod("done", owner="Job", phase="Succeeded"), pod("failed", phase="Failed"), pod("bare"),
            pod("cache", owner="ReplicaSet", emptydir=True)]
    selection = select_pods(pods, options())
    assert sorted(p.name for p in selection.evict) == ["bare", "cache", "web"]
    assert dict(selection.skipped) == {"default/ds": "DaemonSet pod", "default/static": "mirror pod",
                                       "default/done": "finished", "default/failed": "finished"}


def test_unmanaged_and_emptydir_are_configurable():
    pods = [pod("bare"), pod("cache", owner="ReplicaSet", emptydir=True)]
    selection = select_pods(pods, options(evict_unmanaged=False, evict_local_storage=False))
    assert selection.evict == []
    assert len(selection.skipped) == 2


def test_critical_pods_are_the_last_tier_and_default_grace_is_30():
    selection = select_pods([pod("a", owner="ReplicaSet"), pod("dns", priority="system-cluster-critical"),
                             pod("cni", priority="system-node-critical", grace=5)], options())
    tiers = {p.name: (p.tier, p.grace_s) for p in selection.evict}
    assert tiers == {"a": (0, 30), "dns": (1, 30), "cni": (1, 5)}


def test_terminating_pods_are_marked_so_a_resume_does_not_evict_them_again():
    selection = select_pods([pod("a", owner="ReplicaSet", terminating=True)], options())
    assert selection.evict[0].terminating


def test_grace_is_clamped_to_deadline_minus_margin():
    slow = PodInfo("default", "slow", "u", grace_s=600, tier=0, terminating=False)
    assert clamped_grace(slow, NOW, options()) == 105
    assert clamped_grace(slow, NOW + timedelta(seconds=100), options()) == 5
    assert clamped_grace(slow, NOW + timedelta(seconds=119), options()) == 0
    quick = PodInfo("default", "quick", "u", grace_s=10, tier=0, terminating=False)
    assert clamped_grace(quick, NOW, options()) == 10


def test_last_safe_moment_leaves_the_pod_its_grace_but_at_most_half_the_window():
    opts = options()
    thirty = PodInfo("default", "a", "u", grace_s=30, tier=0, terminating=False)
    assert last_safe_moment(thirty, NOW, opts) == opts.pods_gone_by - timedelta(seconds=30)
    huge = PodInfo("default", "b", "u", grace_s=600, tier=0, terminating=False)
    assert last_safe_moment(huge, NOW, opts) == opts.pods_gone_by - timedelta(seconds=52.5)
    zero = PodInfo("default", "c", "u", grace_s=0, tier=0, terminating=False)
    assert last_safe_moment(zero, NOW, opts) == opts.pods_gone_by
    for candidate in (thirty, huge, zero):
        assert last_safe_moment(candidate, NOW, opts) <= opts.deadline


def test_a_malformed_pod_is_set_aside_and_the_others_are_drained():
    broken_owner = pod("owner-x", owner="ReplicaSet")
    broken_owner["metadata"]["ownerReferences"] = ["x"]
    bad_grace = pod("grace-text", owner="ReplicaSet", grace="thirty")
    negative_grace = pod("grace-negative", owner="ReplicaSet", grace=-5)
    no_name = pod("", owner="ReplicaSet")
    not_an_object = ["not", "a", "pod"]
    spec_list = pod("spec-list", owner="ReplicaSet")
    spec_list["spec"] = ["x"]
    pods = [pod("web-1", owner="ReplicaSet"), broken_owner, bad_grace, negative_grace, no_name, not_an_object,
            spec_list, pod("web-2", owner="ReplicaSet", grace=10)]
    selection = select_pods(pods, options())
    assert [p.name for p in selection.evict] == ["web-1", "web-2"]
    assert [key for key, _ in selection.malformed] == [
        "default/owner-x", "default/grace-text", "default/grace-negative", "default/", "?/?", "default/spec-list"]
    assert "ownerReferences" in selection.malformed[0][1]
    assert "thirty" in selection.malformed[1][1]
