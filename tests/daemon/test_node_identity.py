"""The agent acts only on the Node that names this instance.

The real daemon against ImdsSim and KubeSim: a Node whose providerID cannot be matched to the
instance IMDS describes is refused, the agent stays up and waiting, and acts once the Node can be
matched. docs/hostile-input.md has the rules; tests/unit/test_kube_identity.py tests them alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from nodeagent_sim.imds import ImdsSim
from tests.cluster import NODE, PROVIDER, Cluster

OTHER_INSTANCE = "aws:///us-east-1a/i-0fffffffffffffff0"


def _node_writes(cluster: Cluster) -> list:
    return cluster.writes(r"/nodes/|/eviction$")


@pytest.mark.parametrize("imds_gap, provider_id, log", [
    ("zone", OTHER_INSTANCE, r"has providerID 'aws:///us-east-1a/i-0fffffffffffffff0', but IMDS says this instance "
                             r"is 'aws:///<zone>/i-0123456789abcdef0'; refusing to act on another node"),
    ("instance-id", PROVIDER, r"cannot be checked: this instance's id is unknown \(IMDS did not give it\), "
                              r"so it cannot be matched to this instance \(set NODE_NAME to name this node "
                              r"yourself\); refusing"),
])
def test_unverifiable_or_foreign_node_is_never_acted_on(tmp_path: Path, imds_gap, provider_id, log):
    """IMDS gives no zone (and the Node names another instance), or no instance id: the Node
    cannot be matched to this instance, so the agent refuses it whatever its credential names."""
    imds = ImdsSim(**({"availability_zone": ""} if imds_gap == "zone" else {"instance_id": ""})).start()
    cluster = Cluster(tmp_path, imds=imds)
    try:
        cluster.kube.mutate_node(NODE, lambda n: n["spec"].update(providerID=provider_id))
        cluster.add_workload(count=2)
        cluster.start_agent(ready=r"refusing")
        cluster.spot(30)
        cluster.daemon.wait_line(r"Kubernetes not ready yet .*acting as soon as it is", timeout_s=10)
        cluster.wait_polls(4)  # the notice is polled, and nothing is written
        assert not _node_writes(cluster), "acted on a node it could not prove was its own"
        cluster.finish()
        assert cluster.find(log), cluster.daemon.output()
        assert cluster.alive_at_end and cluster.exit_codes[-1] == 0
    finally:
        cluster.finish()


def test_empty_provider_id_waits_until_the_node_names_this_instance(tmp_path: Path):
    """The Node (found through SelfSubjectReview) has no providerID yet: the agent refuses and
    keeps the notice waiting; once the providerID is set to this instance it cordons and drains."""
    cluster = Cluster(tmp_path)
    try:
        cluster.kube.mutate_node(NODE, lambda n: n["spec"].pop("providerID", None))
        cluster.add_workload(count=3)
        cluster.start_agent(ready=r"has no providerID yet")
        notice = cluster.spot(40)
        cluster.daemon.wait_line(r"Kubernetes not ready yet .*acting as soon as it is", timeout_s=10)
        cluster.wait_polls(4)  # the notice is polled, and nothing is written
        assert not _node_writes(cluster), "acted on a Node with no providerID"
        cluster.kube.mutate_node(NODE, lambda n: n["spec"].update(providerID=PROVIDER))
        cluster.daemon.wait_line(r"drained: ", timeout_s=30)
        cluster.finish().check(notice, fault_log=rf"node '{NODE}' \(from SelfSubjectReview\) has no providerID yet")
    finally:
        cluster.finish()


def test_empty_provider_id_is_accepted_when_node_name_is_set(tmp_path: Path):
    cluster = Cluster(tmp_path)
    try:
        cluster.kube.mutate_node(NODE, lambda n: n["spec"].pop("providerID", None))
        cluster.add_workload(count=2)
        cluster.start_agent(NODE_NAME=NODE)
        notice = cluster.spot(30)
        cluster.daemon.wait_line(r"drained: ", timeout_s=30)
        cluster.finish().check(notice, fault_log=rf"node {NODE}: has no providerID; trusting NODE_NAME")
    finally:
        cluster.finish()
