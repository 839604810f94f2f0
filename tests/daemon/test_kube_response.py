"""The response: the real daemon, the real kubernetes client over HTTPS with node credentials,
against the Kubernetes API simulator's Node authorizer and NodeRestriction rules."""
from __future__ import annotations

import re
import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from nodeagent_sim.kube import KubeSim
from tests.cluster import NODE, OTHER, Cluster
from tests.helpers import wait_for

STARTED = r"acting on node|refusing|not a spot node|Kubernetes not ready"


def start_agent(cluster: Cluster, **keys: str):
    """The daemon against `cluster`, once its Kubernetes startup has come to a conclusion."""
    return cluster.start_agent(ready=STARTED, ready_timeout_s=20, **{"DRAIN_MARGIN": "2s", **keys})


def standard_pods(kube: KubeSim) -> None:
    for i in range(6):
        kube.add_pod(f"web-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="web", labels={"app": "web"})
    kube.add_pod("db-0", node=NODE, owner_kind="StatefulSet", owner_name="db", grace_s=20)
    kube.add_pod("bare", node=NODE, grace_s=5)
    kube.add_pod("cache", node=NODE, owner_kind="ReplicaSet", owner_name="cache", emptydir=True)
    kube.add_pod("coredns-0", "kube-system", node=NODE, owner_kind="ReplicaSet", owner_name="coredns",
                 priority_class="system-cluster-critical")
    kube.add_pod("cni-agent", "kube-system", node=NODE, owner_kind="DaemonSet", owner_name="aws-node",
                 priority_class="system-node-critical")
    kube.add_pod("static-probe", "kube-system", node=NODE, mirror=True)
    kube.add_pod("job-done", node=NODE, owner_kind="Job", owner_name="j", phase="Succeeded")


def test_basic_drain(cluster):
    standard_pods(cluster.kube)
    daemon = start_agent(cluster)
    try:
        cluster.imds.schedule_spot(30)
        deadline = time.monotonic() + 30
        daemon.wait_line(r"drained: ", timeout_s=30)
        finished = time.monotonic()
        assert finished < deadline
        node = cluster.kube.node(NODE)
        assert node["spec"]["unschedulable"] is True
        assert {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}.items() <= node["spec"]["taints"][0].items()
        labels = node["metadata"]["labels"]
        assert labels["nodeagent.io/interruption"] == "spot-itn"
        assert labels["node.kubernetes.io/exclude-from-external-load-balancers"] == "true"
        assert "nodeagent.io/deadline" in node["metadata"]["annotations"]
        # The taint attempt was refused and the fallback said so exactly once.
        assert len(daemon.find("node credentials cannot taint")) == 1
        assert cluster.kube.count(status=403, path_regex=f"/nodes/{re.escape(NODE)}$") >= 1
        # DaemonSet, mirror and finished pods untouched; everything else gone.
        left = {p["metadata"]["name"] for p in cluster.kube.pods(node=NODE)}
        assert left == {"cni-agent", "static-probe", "job-done"}
        assert not cluster.evictions("cni-agent") and not cluster.evictions("static-probe")
        # Critical pods evicted after all the others.
        critical = cluster.evictions("coredns-0")
        ordinary = [r for r in cluster.evictions() if "coredns" not in r.path]
        assert critical and ordinary
        assert min(r.t_monotonic for r in critical) > max(r.t_monotonic for r in ordinary)
        # Nothing touched the other node or its pods.
        assert not cluster.writes(re.escape(OTHER)) and not cluster.writes("other-node-web")
        assert cluster.kube.pod("default", "other-node-web") is not None
        # No per-pod polling: no GET of single pods at all.
        assert cluster.kube.count(method="GET", path_regex=r"/pods/[^/]+$") == 0
    finally:
        assert daemon.stop() == 0


@pytest.mark.parametrize("force", [True, False])
def test_pdb_deadlock(cluster, force):
    for i in range(3):
        cluster.kube.add_pod(f"guarded-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="guarded",
                             labels={"app": "guarded"}, grace_s=4)
    cluster.kube.add_pdb("guarded", "default", selector={"app": "guarded"}, min_available=3)
    cluster.kube.add_pod("free", node=NODE, owner_kind="ReplicaSet", owner_name="free")
    daemon = start_agent(cluster, FORCE_AT_DEADLINE="true" if force else "false")
    try:
        cluster.imds.schedule_spot(16)
        notice_deadline = datetime.now(timezone.utc) + timedelta(seconds=16)
        daemon.wait_line(r"drained: |drain incomplete: ", timeout_s=30)
        refused = [cluster.kube.count(path_regex=rf"guarded-{i}/eviction$", status=429) for i in range(3)]
        # One pod probes the budget and is retried; the others wait for it (one probe per budget).
        assert max(refused) >= 3 and min(refused) >= 1, f"PDB refusals were retried: {refused}"
        deletes = [r for r in cluster.writes(r"/pods/guarded-\d$") if r.method == "DELETE"]
        if force:
            assert len(deletes) == 3
            assert daemon.find(r"forced default/guarded-0")
            assert not [p for p in cluster.kube.pods(node=NODE) if "guarded" in p["metadata"]["name"]]
            # Forced at the last safe moment, before the deadline minus the margin.
            last_write = max(r.t_monotonic for r in cluster.writes())
            assert datetime.now(timezone.utc) - timedelta(seconds=time.monotonic() - last_write) < notice_deadline
            assert daemon.find(r"drained: .*3 forced")
        else:
            assert deletes == []
            assert daemon.find(r"left default/guarded-0: its PDB refused")
            assert daemon.find(r"pods left on the node at the deadline: .*guarded")
            assert len([p for p in cluster.kube.pods(node=NODE) if "guarded" in p["metadata"]["name"]]) == 3
        assert cluster.kube.pod("default", "free") is None
    finally:
        daemon.stop()


def test_grace_is_clamped_to_the_deadline(make_cluster):
    cluster = make_cluster(time_scale=0.05)
    cluster.kube.add_pod("slow", node=NODE, owner_kind="ReplicaSet", owner_name="slow", grace_s=600)
    start_agent(cluster, DRAIN_MARGIN="15s")
    cluster.imds.schedule_spot(120)
    seen = {}

    def terminating():
        pod = cluster.kube.pod("default", "slow")
        if pod and pod["metadata"].get("deletionTimestamp"):
            seen["grace"] = pod["metadata"]["deletionGracePeriodSeconds"]
        return "grace" in seen

    assert wait_for(terminating, 10)
    assert 100 <= seen["grace"] <= 120 - 15


def test_cancelled_scheduled_event_uncordons_and_removes_labels(cluster):
    event = {"NotBefore": (datetime.now(timezone.utc) + timedelta(days=2)).strftime("%d %b %Y %H:%M:%S GMT"),
             "Code": "instance-retirement", "Description": "retiring", "EventId": "instance-event-0d59937288b749b32",
             "NotAfter": "", "State": "active"}
    daemon = start_agent(cluster, ON_SCHEDULED_EVENT="cordon")
    try:
        cluster.imds.set_scheduled([event])
        assert wait_for(lambda: cluster.kube.node(NODE)["spec"].get("unschedulable") is True, 10)
        assert wait_for(lambda: cluster.kube.node(NODE)["metadata"]["labels"].get("nodeagent.io/interruption") == "scheduled", 10)
        cluster.imds.set_scheduled([dict(event, State="canceled")])
        daemon.wait_line(r"cancelled: scheduled event is now canceled")
        assert wait_for(lambda: not cluster.kube.node(NODE)["spec"].get("unschedulable"), 10)
        assert wait_for(lambda: "nodeagent.io/interruption" not in cluster.kube.node(NODE)["metadata"]["labels"], 10)
        assert wait_for(lambda: cluster.kube.node(NODE)["metadata"]["labels"].get("nodeagent.io/agent") == "watching", 10)
        node = cluster.kube.node(NODE)
        assert not [k for k in node["metadata"]["labels"] if k in ("nodeagent.io/interruption", "nodeagent.io/notice-id")]
        assert "nodeagent.io/deadline" not in (node["metadata"].get("annotations") or {})
        assert node["metadata"]["labels"]["nodeagent.io/agent"] == "watching"
    finally:
        daemon.stop()


def test_restart_mid_drain_finishes_without_repeating(make_cluster):
    cluster = make_cluster(time_scale=0.1)
    for i in range(12):
        cluster.kube.add_pod(f"app-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="app",
                             grace_s=60 if i < 6 else 5)
    first = start_agent(cluster, DRAIN_PARALLELISM="2")
    cluster.imds.schedule_spot(40)
    assert wait_for(lambda: len(cluster.evictions()) >= 4, 20)
    first.kill()  # kill -9 mid-drain
    second = start_agent(cluster)
    second.wait_line(r"drained: ", timeout_s=40)
    assert not second.find(r"notice spot-itn\S* \(spot-itn"), "handled twice"
    assert second.find(r"resuming drain for spot-itn")
    # Counted by answer, not by arrival: the kill can cut a POST between its headers and body,
    # which the server answers 400 and which evicted nothing.
    accepted = Counter(r.path for r in cluster.evictions() if 200 <= r.status < 300)
    assert len(accepted) == 12 and max(accepted.values()) == 1, f"evicted again after the restart: {accepted}"
    assert cluster.evictable_left() == []
    second.stop()
    spot = [r for r in cluster.state()["notices"].values() if r["kind"] == "spot-itn"]
    assert len(spot) == 1 and spot[0]["phase"] == "done"


def notice_to_cordon(cluster) -> float:
    cordoned = []
    cluster.kube.on_patch_node(lambda name, t, node: cordoned.append(t) if node["spec"].get("unschedulable") else None)
    daemon = start_agent(cluster)
    try:
        daemon.wait_line(r"ready to respond")  # the startup's own writes are over
        appeared = time.monotonic()
        cluster.imds.schedule_spot(60)
        assert wait_for(lambda: cordoned, 10)
        return cordoned[0] - appeared
    finally:
        daemon.stop()


def test_slow_credentials_do_not_slow_the_cordon(make_cluster):
    slow = make_cluster(exec_plugin=True, delay_s=1.0)
    latency = notice_to_cordon(slow)
    invocations = KubeSim.exec_invocations(slow.kubeconfig)
    # The plugin ran at start only (token pre-warmed), never on the notice path...
    assert invocations == 1, invocations
    # ...so the cordon came within one poll (0.5s) plus a generous allowance for a busy machine.
    assert latency < 0.5 + 0.9, latency


def test_never_the_wrong_node_on_provider_id_mismatch(cluster):
    cluster.kube.mutate_node(NODE, lambda n: n["spec"].update(providerID="aws:///us-east-1b/i-0aaaaaaaaaaaaaaa0"))
    daemon = start_agent(cluster)
    daemon.wait_line(r"refusing to act on another node")
    cluster.imds.schedule_spot(30)
    cluster.wait_polls(4)  # the notice is polled, and nothing is written
    assert not cluster.writes(r"/nodes/"), "patched a node it could not prove was its own"
    assert daemon.alive()


def test_on_demand_node_is_left_alone_when_the_gate_says_no(make_cluster):
    cluster = make_cluster(life_cycle="on-demand", labels={})
    daemon = start_agent(cluster, SPOT_GATE="label-or-imds")
    cluster.imds.schedule_spot(30)
    daemon.wait_line(r"SPOT_GATE=label-or-imds says this is not a spot node")
    cluster.wait_polls(3)  # the notice is polled, and nothing is done
    assert not cluster.kube.node(NODE)["spec"].get("unschedulable")
    assert not cluster.evictions()


def test_spot_label_fallback_sets_lifecycle_label(make_cluster):
    cluster = make_cluster(labels={})
    start_agent(cluster)
    assert wait_for(lambda: cluster.labels().get("lifecycle") == "Ec2Spot", 10)


def test_dry_run_changes_nothing(cluster):
    standard_pods(cluster.kube)
    before = {p["metadata"]["name"] for p in cluster.kube.pods(node=NODE)}
    daemon = start_agent(cluster, DRY_RUN="true")
    try:
        cluster.imds.schedule_spot(30)
        daemon.wait_line(r"drained: .*\(dry run\)", timeout_s=20)
        assert not cluster.kube.node(NODE)["spec"].get("unschedulable")
        assert {p["metadata"]["name"] for p in cluster.kube.pods(node=NODE)} == before
        assert all(r.query.get("dryRun") == "All" for r in cluster.evictions())
        assert cluster.evictions()
    finally:
        daemon.stop()


def test_kubeconfig_appearing_later_is_waited_for(tmp_path, cluster):
    import os
    import shutil

    real = cluster.kubeconfig
    missing = str(tmp_path / "later" / "kubeconfig")
    daemon = cluster.start_agent(ready=rf"waiting for {re.escape(missing)}", KUBECONFIG=missing)
    daemon.wait_line(r"ready: watching IMDS")
    os.makedirs(os.path.dirname(missing))
    shutil.copy(real, missing)
    daemon.wait_line(r"acting on node", timeout_s=10)
    assert daemon.alive()
    assert daemon.stop() == 0


def test_sigterm_mid_drain_exits_and_restart_resumes(make_cluster):
    cluster = make_cluster(time_scale=0.2)
    for i in range(4):
        cluster.kube.add_pod(f"app-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="app", grace_s=30)
    first = start_agent(cluster)
    cluster.imds.schedule_spot(40)
    first.wait_line(r"draining 4 pods")
    assert first.stop(signal.SIGTERM, timeout_s=15) == 0
    assert first.find(r"drain interrupted, it resumes on the next start")
    assert cluster.state()["busy"] is True
    second = start_agent(cluster)
    second.wait_line(r"drained: ", timeout_s=40)


def test_scheduled_event_cancelled_mid_drain_stops_the_drain(cluster):
    """A scheduled event cancelled while its drain waits on a PDB: nothing more is written for the
    notice (no eviction, no delete, no notice label), even when the PDB frees up right after."""
    cluster.kube.add_pod("free", node=NODE, owner_kind="ReplicaSet", owner_name="free", grace_s=1)
    for i in range(2):
        cluster.kube.add_pod(f"guarded-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="guarded",
                             labels={"app": "guarded"}, grace_s=1)
    cluster.kube.add_pdb("guarded", "default", selector={"app": "guarded"}, min_available=2)
    node_states = []
    cluster.kube.on_patch_node(lambda name, t, node: node_states.append((t, dict(node["metadata"]["labels"]))))
    event = {"NotBefore": (datetime.now(timezone.utc) + timedelta(seconds=40)).strftime("%d %b %Y %H:%M:%S GMT"),
             "Code": "instance-retirement", "EventId": "instance-event-0aaaaaaaaaaaaaaaa", "State": "active"}
    daemon = start_agent(cluster, ON_SCHEDULED_EVENT="drain", FORCE_AT_DEADLINE="true")
    try:
        cluster.imds.set_scheduled([event])
        assert wait_for(lambda: cluster.kube.count(path_regex=r"guarded-0/eviction$", status=429) >= 1, 15), \
            daemon.output()
        assert wait_for(lambda: cluster.kube.pod("default", "free") is None, 10), daemon.output()
        cluster.imds.set_scheduled([dict(event, State="canceled")])
        cancelled_at = daemon.wait_line(r"cancelled: scheduled event is now canceled", timeout_s=10).t
        # The PDB frees up right after the cancel: a drain that went on would now evict.
        cluster.kube.add_pod("guarded-elsewhere", node=OTHER, owner_kind="ReplicaSet", owner_name="guarded",
                             labels={"app": "guarded"})
        assert wait_for(lambda: not cluster.kube.node(NODE)["spec"].get("unschedulable"), 10), daemon.output()
        daemon.wait_line(r"notice scheduled-\S+: response stopped \(.*stopped after 1 of 3 pods had gone\)",
                         timeout_s=10)
        cluster.wait_polls(8)  # room for the retries a drain that went on would make
        in_flight_s = 0.5  # a request already sent when the cancel came may still land
        late = [r for r in cluster.writes(r"/pods/") if r.t_monotonic > cancelled_at + in_flight_s]
        assert late == [], f"writes to pods after the cancel: {late}\n{daemon.output()}"
        relabelled = [labels for t, labels in node_states if t > cancelled_at + in_flight_s
                      and ("nodeagent.io/notice-id" in labels or labels.get("nodeagent.io/agent") == "drained")]
        assert relabelled == [], daemon.output()
        assert cluster.kube.pod("default", "guarded-0") is not None and cluster.kube.pod("default", "guarded-1")
        labels = cluster.kube.node(NODE)["metadata"]["labels"]
        assert labels.get("nodeagent.io/agent") == "watching" and "nodeagent.io/notice-id" not in labels
        record = cluster.state()["notices"]["scheduled-instance-event-0aaaaaaaaaaaaaaaa"]
        assert record["phase"] == "cancelled", record
        assert "stopped after 1 of 3 pods had gone" in record["outcome"], record
    finally:
        daemon.stop()
