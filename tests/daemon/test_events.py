"""Kubernetes Events written by the daemon (`python -m nodeagent run`) with the node's own
credentials, as seen by the Kubernetes simulator."""
from __future__ import annotations

import signal
from collections import Counter

from nodeagent.report.events import event_body, event_name
from tests.cluster import NODE
from tests.helpers import Daemon, wait_for


def start_daemon(cluster_with_pods, **keys) -> Daemon:
    daemon = Daemon(cluster_with_pods.env(**keys)).start()
    daemon.wait_line(r"ready: watching IMDS", timeout_s=20)
    return daemon


def by_reason(kube):
    return {event["reason"]: event for event in kube.events()}


def test_a_drain_writes_one_event_per_step_on_the_node(cluster_with_pods):
    daemon = start_daemon(cluster_with_pods)
    try:
        cluster_with_pods.imds.schedule_spot(30)
        assert wait_for(lambda: "DrainFinished" in by_reason(cluster_with_pods.kube), 20), daemon.output()
    finally:
        assert daemon.stop() == 0
    events = cluster_with_pods.kube.events()
    reasons = [event["reason"] for event in events]
    assert reasons == ["SpotInterruptionNotice", "NodeCordoned", "DrainStarted", "DrainFinished"]
    for event in events:
        assert event["metadata"]["namespace"] == "default"
        assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": NODE, "uid": NODE}
        assert event["count"] == 1
        assert event["source"] == {"component": "nodeagent", "host": NODE}
        assert event["firstTimestamp"] and event["lastTimestamp"]
    types = {event["reason"]: event["type"] for event in events}
    assert types == {"SpotInterruptionNotice": "Warning", "NodeCordoned": "Normal",
                     "DrainStarted": "Normal", "DrainFinished": "Normal"}
    finished = by_reason(cluster_with_pods.kube)["DrainFinished"]["message"]
    assert finished.startswith("5 evicted, 0 forced, 0 left, 0 failed of 5")
    assert "response: drain" in by_reason(cluster_with_pods.kube)["SpotInterruptionNotice"]["message"]
    # Written with the node's credentials, and never listed (the node may not).
    event_requests = [r for r in cluster_with_pods.kube.requests if r.resource == "events"]
    assert {r.user for r in event_requests} == {f"system:node:{NODE}"}
    assert {r.verb for r in event_requests} == {"create"}
    assert all(r.status == 201 for r in event_requests)


def test_a_resumed_drain_aggregates_onto_the_same_event(make_cluster):
    cluster_with_pods = make_cluster(time_scale=0.1, replace_evicted=True)  # pods take ~3 s to stop: time to restart mid-drain
    cluster_with_pods.add_workload(count=4)
    try:
        first = start_daemon(cluster_with_pods)
        cluster_with_pods.imds.schedule_spot(40)
        assert wait_for(lambda: "DrainStarted" in by_reason(cluster_with_pods.kube), 20), first.output()
        assert first.stop(signal.SIGTERM) == 0
        assert "DrainFinished" not in by_reason(cluster_with_pods.kube)
        second = start_daemon(cluster_with_pods)
        try:
            assert wait_for(lambda: "DrainFinished" in by_reason(cluster_with_pods.kube), 30), second.output()
        finally:
            assert second.stop() == 0
        counts = Counter(event["reason"] for event in cluster_with_pods.kube.events())
        assert set(counts.values()) == {1}, counts  # one Event object per reason
        events = by_reason(cluster_with_pods.kube)
        assert events["DrainStarted"]["count"] == 2
        assert events["SpotInterruptionNotice"]["count"] == 1
        assert events["DrainFinished"]["count"] == 1
        patches = [r for r in cluster_with_pods.kube.requests if r.resource == "events" and r.method == "PATCH"]
        assert len(patches) == 1 and patches[0].name == events["DrainStarted"]["metadata"]["name"]
    finally:
        cluster_with_pods.finish()


def test_a_withdrawn_rebalance_is_cordoned_then_uncordoned(cluster_with_pods):
    daemon = start_daemon(cluster_with_pods)
    try:
        cluster_with_pods.imds.set_rebalance()
        assert wait_for(lambda: "NodeCordoned" in by_reason(cluster_with_pods.kube), 10), daemon.output()
        cluster_with_pods.imds.set_rebalance(None)
        assert wait_for(lambda: "NodeUncordoned" in by_reason(cluster_with_pods.kube), 15), daemon.output()
    finally:
        assert daemon.stop() == 0
    reasons = [event["reason"] for event in cluster_with_pods.kube.events()]
    assert reasons == ["RebalanceRecommendation", "NodeCordoned", "NoticeCancelled", "NodeUncordoned"]
    assert "withdrawn" in by_reason(cluster_with_pods.kube)["NoticeCancelled"]["message"]


def test_events_off_writes_none(cluster_with_pods):
    daemon = start_daemon(cluster_with_pods, EVENTS="false")
    try:
        cluster_with_pods.imds.schedule_spot(30)
        daemon.wait_line(r"drained: 5 evicted", timeout_s=20)
    finally:
        assert daemon.stop() == 0
    assert cluster_with_pods.kube.events() == []


def test_event_names_are_stable_valid_and_distinct():
    names = {event_name(NODE, notice, reason) for notice in ("spot-itn-1", "spot-itn-2")
             for reason in ("DrainStarted", "DrainFinished")}
    assert len(names) == 4
    assert event_name(NODE, "spot-itn-1", "DrainStarted") == event_name(NODE, "spot-itn-1", "DrainStarted")
    long_node = "a" * 253
    assert len(event_name(long_node, "x", "DrainStarted")) <= 253


def test_event_body_truncates_long_messages():
    from datetime import datetime, timezone

    now = datetime(2030, 1, 1, tzinfo=timezone.utc)
    body = event_body("n.1", NODE, "DrainFailed", "x" * 5000, 3, now, now)
    assert len(body["message"]) == 1024 and body["type"] == "Warning" and body["count"] == 3
