"""The fleet view without a DaemonSet: the daemon labels its own Node with its presence
(nodeagent.io/agent) and version at startup, follows its state, and writes nothing while idle."""
from __future__ import annotations

import threading
import time

import pytest

from nodeagent import __version__
from tests.cluster import NODE
from tests.helpers import Daemon, wait_for


@pytest.fixture
def cluster_with_pods(make_cluster):
    """The shared fixture's node, with pods that take 1.5 s to stop."""
    cluster = make_cluster(time_scale=0.05, replace_evicted=True)
    cluster.add_workload(count=4)
    return cluster


class LabelHistory:
    """Every distinct value of one label, in order, from the simulator's node-patch hook."""

    def __init__(self, kube, key: str):
        self.key = key
        self.values = []
        self._lock = threading.Lock()
        kube.on_patch_node(self._seen)

    def _seen(self, name: str, t: float, node: dict) -> None:
        value = ((node.get("metadata") or {}).get("labels") or {}).get(self.key)
        with self._lock:
            if not self.values or self.values[-1] != value:
                self.values.append(value)

    def snapshot(self):
        with self._lock:
            return list(self.values)


def node_patches(kube) -> int:
    return len([r for r in list(kube.requests) if r.resource == "nodes" and r.method == "PATCH"])


def test_presence_label_appears_at_startup_and_follows_the_state(cluster_with_pods):
    history = LabelHistory(cluster_with_pods.kube, "nodeagent.io/agent")
    assert "nodeagent.io/agent" not in cluster_with_pods.labels()
    daemon = Daemon(cluster_with_pods.env()).start()
    try:
        assert wait_for(lambda: cluster_with_pods.labels().get("nodeagent.io/agent") == "watching", 20), daemon.output()
        assert cluster_with_pods.labels()["nodeagent.io/version"] == __version__
        # Cheap: no periodic writes while nothing happens (once the Kubernetes startup is over).
        daemon.wait_line(r"ready to respond")
        before = node_patches(cluster_with_pods.kube)
        cluster_with_pods.wait_polls(6)
        assert node_patches(cluster_with_pods.kube) == before
        cluster_with_pods.imds.schedule_spot(30)
        assert wait_for(lambda: cluster_with_pods.labels().get("nodeagent.io/agent") == "drained", 25), daemon.output()
    finally:
        assert daemon.stop() == 0
    assert history.snapshot() == ["watching", "draining", "drained"]


def test_a_clean_stop_says_stopped_and_a_hung_api_does_not_hold_the_stop(cluster_with_pods):
    env = cluster_with_pods.env()
    daemon = Daemon(env).start()
    daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
    assert daemon.stop() == 0
    assert cluster_with_pods.labels()["nodeagent.io/agent"] == "stopped"
    daemon = Daemon(env).start()  # the next start guards the node again
    try:
        cluster_with_pods.wait_startup_writes(daemon)  # hang only the stop's PATCH
        cluster_with_pods.kube.inject(count=5, status=None, delay_s=20, method="PATCH", path_regex="^/api/v1/nodes/")
        started = time.monotonic()
        assert daemon.stop() == 0
        took = time.monotonic() - started
    finally:
        cluster_with_pods.kube.clear_faults()
    assert took < 8, f"the stop waited {took:.1f}s on a hung API"
    assert daemon.find(r"could not update nodeagent.io/agent: .*")


def test_a_cordon_only_notice_shows_cordoning_then_cordoned(cluster_with_pods):
    history = LabelHistory(cluster_with_pods.kube, "nodeagent.io/agent")
    daemon = Daemon(cluster_with_pods.env()).start()
    try:
        daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
        cluster_with_pods.imds.set_rebalance()
        assert wait_for(lambda: cluster_with_pods.labels().get("nodeagent.io/agent") == "cordoned", 15), daemon.output()
        cluster_with_pods.imds.set_rebalance(None)  # withdrawn: uncordoned, back to watching
        assert wait_for(lambda: cluster_with_pods.labels().get("nodeagent.io/agent") == "watching", 15), daemon.output()
    finally:
        assert daemon.stop() == 0
    assert history.snapshot() == ["watching", "cordoning", "cordoned", "watching", "stopped"]


def test_the_labels_are_selectable_like_kubectl_does(cluster_with_pods):
    """`kubectl get nodes -l lifecycle=Ec2Spot -L nodeagent.io/agent`: a label-selected list."""
    daemon = Daemon(cluster_with_pods.env()).start()
    try:
        assert wait_for(lambda: cluster_with_pods.labels().get("nodeagent.io/agent") == "watching", 20)
    finally:
        assert daemon.stop() == 0
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = cluster_with_pods.kube.url
    configuration.ssl_ca_cert = cluster_with_pods.kube.ca_file
    configuration.api_key = {"authorization": cluster_with_pods.kube.admin_token()}
    configuration.api_key_prefix = {"authorization": "Bearer"}
    with client.ApiClient(configuration) as api_client:
        nodes = client.CoreV1Api(api_client).list_node(label_selector="lifecycle=Ec2Spot,nodeagent.io/agent")
    assert [(n.metadata.name, n.metadata.labels["nodeagent.io/agent"]) for n in nodes.items] == [(NODE, "stopped")]
