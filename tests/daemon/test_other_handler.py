"""An aws-node-termination-handler DaemonSet pod on the agent's node, in the Kubernetes simulator:
the daemon says so once (a log warning and a Warning Event on the Node), drains anyway, and
`nodeagent status` lists it as a problem."""
from __future__ import annotations

from tests.cluster import NODE
from tests.helpers import Daemon, run_cli, wait_for

NTH_POD = "aws-node-termination-handler-x7k2p"
WARNING = r"aws-node-termination-handler runs on node"


def add_nth_pod(kube) -> None:
    kube.add_pod(NTH_POD, "kube-system", node=NODE, owner_kind="DaemonSet", owner_name="aws-node-termination-handler",
                 labels={"app.kubernetes.io/name": "aws-node-termination-handler",
                         "app.kubernetes.io/instance": "aws-node-termination-handler",
                         "k8s-app": "aws-node-termination-handler"})


def other_handler_events(kube):
    return [event for event in kube.events() if event["reason"] == "OtherTerminationHandler"]


def drain_and_stop(cluster_with_pods, daemon: Daemon) -> None:
    try:
        cluster_with_pods.imds.schedule_spot(30)
        daemon.wait_line(r"drained: \d+ evicted", timeout_s=30)
    finally:
        assert daemon.stop() == 0


def test_an_nth_pod_at_startup_is_said_once_and_the_drain_goes_on(cluster_with_pods):
    add_nth_pod(cluster_with_pods.kube)
    daemon = Daemon(cluster_with_pods.env()).start()
    daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
    daemon.wait_line(WARNING, timeout_s=20)  # at startup, before any notice
    assert wait_for(lambda: other_handler_events(cluster_with_pods.kube), 10), daemon.output()
    status = run_cli(["status"], cluster_with_pods.env())
    assert status.returncode == 1 and f"kube-system/{NTH_POD}" in status.stdout, status.stdout
    drain_and_stop(cluster_with_pods, daemon)
    assert len(daemon.find(WARNING)) == 1, daemon.output()  # the drain's own list does not repeat it
    events = other_handler_events(cluster_with_pods.kube)
    assert len(events) == 1 and events[0]["type"] == "Warning" and events[0]["count"] == 1
    assert events[0]["involvedObject"]["name"] == NODE and NTH_POD in events[0]["message"]
    left = {p["metadata"]["name"] for p in cluster_with_pods.kube.pods(node=NODE)}
    assert NTH_POD in left  # a DaemonSet pod: left alone, as every DaemonSet pod
    assert not [key for key in cluster_with_pods.workload if key.split("/")[1] in left]


def test_an_nth_pod_that_appears_later_is_said_at_the_drain(cluster_with_pods):
    daemon = Daemon(cluster_with_pods.env()).start()
    daemon.wait_line(r"acting on node", timeout_s=20)
    add_nth_pod(cluster_with_pods.kube)
    drain_and_stop(cluster_with_pods, daemon)
    lines = daemon.find(WARNING)
    assert len(lines) == 1, daemon.output()
    assert daemon.output().index("cordoned ") < daemon.output().index("aws-node-termination-handler runs")  # the drain's list
    assert len(other_handler_events(cluster_with_pods.kube)) == 1


def test_no_nth_pod_no_warning_and_a_healthy_status(cluster_with_pods):
    daemon = Daemon(cluster_with_pods.env()).start()
    try:
        daemon.wait_line(r"ready to respond", timeout_s=20)
        status = run_cli(["status", "--json"], cluster_with_pods.env())
        assert '"other_handlers": []' in status.stdout and "termination-handler" not in status.stdout
    finally:
        assert daemon.stop() == 0
    assert not daemon.find(WARNING) and not other_handler_events(cluster_with_pods.kube)
