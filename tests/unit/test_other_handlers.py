"""Another termination handler on this node (nodeagent/other_handlers.py): which pods are an
aws-node-termination-handler, and what nodeagent says about them. Pure."""

from datetime import datetime, timezone

import pytest

from nodeagent.other_handlers import EVENT_REASON, event_body, event_name, find_other_handlers, warning_text

NODE = "ip-10-0-1-2.ec2.internal"


def pod(name, namespace="kube-system", node=NODE, labels=None, image="busybox:1", owner="DaemonSet", phase="Running"):
    metadata = {"name": name, "namespace": namespace, "uid": f"uid-{name}", "labels": labels or {}}
    if owner:
        metadata["ownerReferences"] = [{"kind": owner, "name": "owner", "controller": True}]
    return {"metadata": metadata, "spec": {"nodeName": node, "containers": [{"name": "c", "image": image}]},
            "status": {"phase": phase}}


# How the chart's DaemonSet pods look: generated name, both name labels.
NTH_POD = pod("aws-node-termination-handler-x7k2p", labels={
    "app.kubernetes.io/name": "aws-node-termination-handler", "app.kubernetes.io/instance": "aws-node-termination-handler",
    "k8s-app": "aws-node-termination-handler"}, image="example.invalid/aws-ec2/aws-node-termination-handler:v1.25.1")


@pytest.mark.parametrize("candidate,matched_by", [
    (NTH_POD, "label app.kubernetes.io/name=aws-node-termination-handler"),
    (pod("nth-abcde", labels={"k8s-app": "aws-node-termination-handler", "app.kubernetes.io/name": "nth"}),
     "label k8s-app=aws-node-termination-handler"),  # nameOverride changes only the first label
    (pod("aws-node-termination-handler-q9z8w"), "pod name"),
    (pod("spot-handler-1", image="registry.invalid:5000/mirror/aws-node-termination-handler@sha256:abc"),
     "image registry.invalid:5000/mirror/aws-node-termination-handler@sha256:abc"),
    (pod("spot-handler-2", image="aws-node-termination-handler"), "image aws-node-termination-handler"),
])
def test_an_nth_pod_on_this_node_is_found(candidate, matched_by):
    found = find_other_handlers([pod("web-1", "default", owner="ReplicaSet"), candidate], NODE)
    assert [(h.key, h.matched_by) for h in found] == [
        (f"{candidate['metadata']['namespace']}/{candidate['metadata']['name']}", matched_by)]


@pytest.mark.parametrize("candidate", [
    pod("aws-node-termination-handler-x7k2p", node="ip-10-0-9-9.ec2.internal",
        labels={"app.kubernetes.io/name": "aws-node-termination-handler"}),  # another node's
    pod("aws-node-termination-handler-done", phase="Succeeded"),
    pod("aws-node-termination-handler-dead", phase="Failed"),
    pod("kube-proxy-abcde", labels={"k8s-app": "kube-proxy"}, image="kube-proxy:v1.31"),
    pod("aws-node-termination-handlerx", image="other:1"),  # not the chart's generated name
    pod("tool", image="example.invalid/aws-node-termination-handler-exporter:1"),
])
def test_other_pods_are_not_an_nth(candidate):
    assert find_other_handlers([candidate], NODE) == []


def test_hostile_shapes_do_not_break_the_detector():
    odd = [None, "text", {"metadata": "x"}, {"metadata": {"labels": ["a"]}, "spec": {"nodeName": NODE, "containers": 5}},
           {"metadata": {"name": 7, "ownerReferences": "x"}, "spec": {"nodeName": NODE, "containers": [None, 3]}}]
    assert find_other_handlers(odd, NODE) == []


def test_owner_kind_and_the_queue_mode_warning():
    daemonset = find_other_handlers([NTH_POD], NODE)
    assert daemonset[0].owner_kind == "DaemonSet"
    text = warning_text(daemonset, NODE)
    assert "kube-system/aws-node-termination-handler-x7k2p" in text and NODE in text
    assert "404/409" in text and "docs/migrating-from-nth.md" in text and "queue-mode" not in text
    queue = find_other_handlers([pod("aws-node-termination-handler-5f7d-abcde", owner="ReplicaSet")], NODE)
    assert "queue-mode NTH acts on every node" in warning_text(queue, NODE)


def test_the_event_is_a_warning_on_the_node_with_a_stable_name():
    found = find_other_handlers([NTH_POD], NODE)
    when = datetime(2026, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
    body = event_body(NODE, found, "text", when)
    assert body["reason"] == EVENT_REASON and body["type"] == "Warning"
    assert body["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE}
    assert body["metadata"]["namespace"] == "default" and body["firstTimestamp"] == "2026-05-01T12:00:00Z"
    assert event_name(NODE, found) == event_name(NODE, list(reversed(found)))  # a restart writes no second one
    other = find_other_handlers([pod("aws-node-termination-handler-zzzzz")], NODE)
    assert event_name(NODE, other) != event_name(NODE, found)  # a new NTH pod is said again
