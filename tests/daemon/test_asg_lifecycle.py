"""ASG termination lifecycle hooks through the real daemon, against the IMDS, Kubernetes and Auto
Scaling simulators (real processes, real sockets, HTTPS with a verified certificate, SigV4 checked
by the simulator's own verifier). docs/asg-lifecycle.md describes the behaviour."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from nodeagent_sim.autoscaling import AutoScalingSim
from tests.cluster import NODE
from tests.helpers import wait_for
from tests.servers import Receiver

INSTANCE = "i-0123456789abcdef0"
GROUP, HOOK = "nodes", "drain-hook"


@pytest.fixture
def asg(tmp_path):
    sim = AutoScalingSim(cert_dir=str(tmp_path / "asg-certs")).start()
    yield sim
    sim.stop()


def hook_settings(asg: AutoScalingSim, **keys: str) -> dict:
    settings = dict(ASG_LIFECYCLE_HOOK=HOOK, ASG_ENDPOINT_URL=asg.url, ASG_CA_BUNDLE=asg.ca_file,
                    ASG_HEARTBEAT_TIMEOUT="30s", ASG_HEARTBEAT_SHARE="0.1")
    settings.update(keys)
    return settings


def gone_watch(cluster):
    """Records (monotonic) when the last evictable pod left the node, sampled every 10 ms."""
    seen = {}

    def watch() -> None:
        while "t" not in seen:
            if not cluster.evictable_left():
                seen["t"] = time.monotonic()
                return
            time.sleep(0.01)  # the sampling pace: the moment is known to 10 ms

    threading.Thread(target=watch, daemon=True).start()
    return seen


def state(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "state" / "state.json").read_text())["notices"]["asg-terminated"]


def test_terminated_with_a_hook_drains_then_completes_once_within_a_second(tmp_path, asg, make_cluster):
    cluster = make_cluster()
    cluster.imds.set_instance_tags({"aws:autoscaling:groupName": GROUP})  # the group name from IMDS
    for i in range(4):
        cluster.kube.add_pod(f"web-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="web", grace_s=30)
    asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=3600)
    receiver = Receiver().start()
    daemon = cluster.start_agent(**hook_settings(asg, METRICS_TEXTFILE=str(tmp_path / "m.prom"),
                                                            WEBHOOK_URL=receiver.url()))
    try:
        gone = gone_watch(cluster)
        asg.begin_termination(INSTANCE, GROUP, HOOK, imds=cluster.imds)
        assert wait_for(lambda: asg.accepted("CompleteLifecycleAction"), 20), daemon.output()
        complete = asg.accepted("CompleteLifecycleAction")[0]
        assert "t" in gone, "completed before the node was empty"
        assert -0.05 <= complete.t - gone["t"] < 1.0, (complete.t - gone["t"], daemon.output())
        assert complete.params["LifecycleActionResult"] == "CONTINUE"
        assert (complete.params["AutoScalingGroupName"], complete.params["InstanceId"]) == (GROUP, INSTANCE)
        action = asg.action(INSTANCE)
        assert action.released_by == "complete" and not action.heartbeats
        cluster.wait_polls(5)
        assert [c.action for c in asg.calls] == ["CompleteLifecycleAction"], asg.calls  # exactly one call
        daemon.wait_line(r"completed lifecycle hook drain-hook \(CONTINUE\) for i-0123456789abcdef0 in group nodes")
        # The hook thread logs, then reports to the poll loop, which writes the record.
        record = wait_for(lambda: (lambda r: r if r["lifecycle_outcome"] else None)(state(tmp_path)), 10)
        assert record["lifecycle_outcome"] == "completed" and record["lifecycle_completed_at"]
        assert wait_for(lambda: any(e.get("reason") == "LifecycleActionCompleted" for e in cluster.kube.events()), 10)
        assert wait_for(lambda: 'nodeagent_asg_lifecycle_calls_total{call="complete",result="ok"} 1'
                        in (tmp_path / "m.prom").read_text(), 10)
        assert "nodeagent_asg_lifecycle_held_seconds" in (tmp_path / "m.prom").read_text()

        def lifecycle_messages():
            return [body for _, body in receiver.bodies() if body.get("event") == "lifecycle"]

        assert wait_for(lifecycle_messages, 10), receiver.bodies()
        message = lifecycle_messages()[0]
        assert message["lifecycle_completed_at"] and message["held_seconds"] > 0
        assert "completed lifecycle hook drain-hook" in message["summary"]
    finally:
        receiver.stop()
        cluster.finish()


def test_a_slow_drain_sends_heartbeats_that_keep_the_instance(tmp_path, asg, make_cluster):
    cluster = make_cluster(time_scale=1.0)
    cluster.kube.add_pod("slow-0", node=NODE, owner_kind="ReplicaSet", owner_name="slow", grace_s=30, shutdown_s=8)
    asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=5)  # without a heartbeat it would let go at 5 s
    daemon = cluster.start_agent(**hook_settings(asg, ASG_NAME=GROUP))
    try:
        gone = gone_watch(cluster)
        asg.begin_termination(INSTANCE, GROUP, HOOK, imds=cluster.imds)
        assert wait_for(lambda: asg.accepted("CompleteLifecycleAction"), 30), daemon.output()
        action = asg.action(INSTANCE)
        assert action.released_by == "complete", (action, daemon.output())
        assert len(action.heartbeats) >= 2, action  # every 3 s (0.1 of 30 s) during an 8 s drain
        assert asg.accepted("CompleteLifecycleAction")[0].t - gone["t"] < 1.0
        daemon.wait_line(r"heartbeat 2 for lifecycle hook drain-hook")
        assert wait_for(lambda: state(tmp_path)["lifecycle_heartbeats"] == len(action.heartbeats), 10), state(tmp_path)
        assert wait_for(lambda: any(e.get("reason") == "LifecycleActionHeartbeat" for e in cluster.kube.events()), 10)
    finally:
        cluster.finish()


def test_a_restart_mid_drain_still_completes_exactly_once(tmp_path, asg, make_cluster):
    cluster = make_cluster(time_scale=1.0)
    cluster.kube.add_pod("slow-0", node=NODE, owner_kind="ReplicaSet", owner_name="slow", grace_s=30, shutdown_s=6)
    asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=3600)
    keys = hook_settings(asg, ASG_NAME=GROUP)
    daemon = cluster.start_agent(**keys)
    try:
        asg.begin_termination(INSTANCE, GROUP, HOOK, imds=cluster.imds)
        assert wait_for(lambda: cluster.evictions("slow-0"), 15), daemon.output()
        daemon.kill()  # SIGKILL mid-drain: no completion yet
        assert not asg.calls
        daemon = cluster.start_agent(**keys)
        daemon.wait_line(r"resuming drain for asg-terminated", timeout_s=15)
        assert wait_for(lambda: asg.accepted("CompleteLifecycleAction"), 20), daemon.output()
        cluster.wait_polls(5)
        daemon.stop()
        # and a third start finds nothing left to say
        daemon = cluster.start_agent(**keys)
        cluster.wait_polls(5)
        assert [c.action for c in asg.calls if c.action == "CompleteLifecycleAction"] == ["CompleteLifecycleAction"]
        assert asg.action(INSTANCE).released_by == "complete"
    finally:
        cluster.finish()


def test_wrong_credentials_are_reported_never_block_the_drain_and_fresh_ones_complete(tmp_path, asg, make_cluster):
    cluster = make_cluster()
    cluster.kube.add_pod("web-0", node=NODE, owner_kind="ReplicaSet", owner_name="web")
    cluster.imds.set_credentials("ASIAWRONGKEY", "wrong/secret", "wrong-token")
    asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=3600)
    daemon = cluster.start_agent(**hook_settings(asg, ASG_NAME=GROUP))
    try:
        asg.begin_termination(INSTANCE, GROUP, HOOK, imds=cluster.imds)
        daemon.wait_line(r"drained: 1 evicted", timeout_s=15)  # the drain did not wait for AWS
        daemon.wait_line(r"CompleteLifecycleAction attempt 2 failed: .*InvalidClientTokenId", timeout_s=15)
        assert "wrong/secret" not in daemon.output() and "wrong-token" not in daemon.output()
        cluster.imds.set_credentials("ASIASIMULATEDKEY0001", "simulated/secret/key/0001",
                                     "simulated-session-token-0001")  # the role's keys rotate
        assert wait_for(lambda: asg.accepted("CompleteLifecycleAction"), 30), daemon.output()
        refused = [c for c in asg.calls if c.code == "InvalidClientTokenId"]
        assert refused and all(c.t < asg.accepted("CompleteLifecycleAction")[0].t for c in refused)
        assert len(asg.accepted("CompleteLifecycleAction")) == 1
    finally:
        cluster.finish()


def test_a_refused_call_is_reported_and_the_hook_times_out_as_without_nodeagent(tmp_path, asg, make_cluster):
    cluster = make_cluster()
    cluster.kube.add_pod("web-0", node=NODE, owner_kind="ReplicaSet", owner_name="web")
    asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=3600)
    asg.refuse(403, "AccessDenied")
    metrics = tmp_path / "m.prom"
    daemon = cluster.start_agent(**hook_settings(asg, ASG_NAME=GROUP, METRICS_TEXTFILE=str(metrics)))
    try:
        asg.begin_termination(INSTANCE, GROUP, HOOK, imds=cluster.imds)
        daemon.wait_line(r"drained: 1 evicted", timeout_s=15)
        daemon.wait_line(r"could not complete lifecycle hook drain-hook: .*AccessDenied", timeout_s=15)
        assert len(asg.calls) == 1  # not retried: a refusal does not change by itself
        assert wait_for(lambda: state(tmp_path)["lifecycle_outcome"].startswith("failed: "), 10), state(tmp_path)
        assert wait_for(lambda: any(e.get("reason") == "LifecycleActionFailed" for e in cluster.kube.events()), 10)
        assert wait_for(lambda: 'nodeagent_asg_lifecycle_calls_total{call="complete",result="failed"} 1'
                        in metrics.read_text(), 10)
        asg.time_out(INSTANCE)
        assert asg.action(INSTANCE).released_by == "timeout"
    finally:
        cluster.finish()


def test_dry_run_leaves_the_lifecycle_action_waiting_and_says_what_it_would_send(tmp_path, asg, make_cluster):
    """DRY_RUN drains nothing, so the instance still carries its pods: CompleteLifecycleAction
    CONTINUE would let Auto Scaling terminate it under them. Nothing is sent; the log says what."""
    cluster = make_cluster()
    for i in range(3):
        cluster.kube.add_pod(f"web-{i}", node=NODE, owner_kind="ReplicaSet", owner_name="web")
    asg.add_hook(GROUP, HOOK, heartbeat_timeout_s=3600)
    daemon = cluster.start_agent(**hook_settings(asg, ASG_NAME=GROUP, DRY_RUN="true"))
    try:
        asg.begin_termination(INSTANCE, GROUP, HOOK, imds=cluster.imds)
        daemon.wait_line(r"notice asg-terminated: dry run: would send CompleteLifecycleAction "
                         r"\(LifecycleActionResult=CONTINUE\) for i-0123456789abcdef0 in group nodes, "
                         r"hook drain-hook; nothing sent", timeout_s=20)
        cluster.wait_polls(3)  # a few more looks of the hook thread
        assert asg.calls == [], asg.calls
        assert asg.action(INSTANCE).state == "Terminating:Wait" and asg.action(INSTANCE).released_by is None
        assert len(cluster.evictable_left()) == 3  # the pods are all still there
        assert state(tmp_path)["lifecycle_outcome"] == "dry run: not completed"
    finally:
        cluster.finish()
