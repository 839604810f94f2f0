"""UNCORDON_AFTER_REBOOT: a node cordoned for a scheduled system-reboot is uncordoned by the first
start after that reboot, whether the state file survived or was rebuilt from the node's labels, and
a running agent uncordons when IMDS marks the event completed. Neither is a cancellation.

A reboot cannot be staged here, so each test handles the event with the real daemon, stops it, and
moves what it recorded (the state file's handled time, or the node's deadline annotation) to
before this machine's boot: exactly what the next start after a real reboot finds.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone

from nodeagent.timefmt import parse_rfc3339_utc
from tests.cluster import NODE, SCHEDULED, wait_polls
from tests.helpers import Daemon, wait_for

EVENT_ID = "instance-event-0a1b2c3d4e5f60718"
NOTICE_ID = f"scheduled-{EVENT_ID}"
UNCORDONED = r"notice scheduled-\S+: the system-reboot happened \(booted since\); uncordoning"


def boot_time() -> float:
    return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)


def reboot_event(state: str, in_s: int = 60) -> dict:
    not_before = (datetime.now(timezone.utc) + timedelta(seconds=in_s)).replace(microsecond=0)
    return {"NotBefore": not_before.strftime("%d %b %Y %H:%M:%S GMT"), "Code": "system-reboot",
            "Description": "scheduled reboot", "EventId": EVENT_ID, "NotAfter": "", "State": state}


def cordoned(cluster_with_pods) -> bool:
    return bool((cluster_with_pods.kube.node(NODE) or {}).get("spec", {}).get("unschedulable"))


def handle_the_event(cluster_with_pods, env) -> dict:
    event = reboot_event("active")
    cluster_with_pods.imds.set_scheduled([event])
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(rf"notice {NOTICE_ID}: cordoned", timeout_s=20)
        wait_for(lambda: cordoned(cluster_with_pods), 5)
    finally:
        assert daemon.stop() == 0
    # The event stays "active" in IMDS: the start after the reboot must not depend on IMDS having
    # caught up with "completed".
    return event


def handled_before_this_boot(state_file) -> None:
    state = json.loads(state_file.read_text())
    state["notices"][NOTICE_ID]["handled_at"] = boot_time() - 600
    state_file.write_text(json.dumps(state))


def stays_cordoned_over_a_start(cluster_with_pods, env) -> None:
    """A start that must not uncordon. "ready: watching IMDS" comes before the API is reached, so
    waiting for it proves nothing: wait until the responder has reached the API ("acting on
    node"; a start-up uncordon is the worker's first job right after), then give it several polls."""
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"acting on node ", timeout_s=20)
        wait_polls(cluster_with_pods.imds, 4)
        assert daemon.alive()
    finally:
        assert daemon.stop() == 0
    assert cordoned(cluster_with_pods), "the start uncordoned the node"
    assert not daemon.find(UNCORDONED)


def test_uncordoned_after_the_reboot_from_the_state_file(cluster_with_pods):
    env = cluster_with_pods.env(ON_SCHEDULED_EVENT="cordon")
    handle_the_event(cluster_with_pods, env)
    state_file = cluster_with_pods.state_dir / "state.json"
    state = json.loads(state_file.read_text())
    assert state["notices"][NOTICE_ID]["handled_at"] > boot_time()
    stays_cordoned_over_a_start(cluster_with_pods, env)  # not rebooted yet
    handled_before_this_boot(state_file)
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(UNCORDONED, timeout_s=20)
        wait_for(lambda: not cordoned(cluster_with_pods), 5)
    finally:
        assert daemon.stop() == 0


def test_uncordoned_after_the_reboot_when_the_state_was_rebuilt_from_the_node(cluster_with_pods):
    env = cluster_with_pods.env(ON_SCHEDULED_EVENT="cordon")
    handle_the_event(cluster_with_pods, env)
    (cluster_with_pods.state_dir / "state.json").write_bytes(b'{"schema": 1, "notices": {"x": \x00\xff')
    before_boot = datetime.fromtimestamp(boot_time() - 600, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000000Z")

    def backdate(node: dict) -> None:
        node["metadata"]["annotations"]["nodeagent.io/deadline"] = before_boot

    cluster_with_pods.kube.mutate_node(NODE, backdate)
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(r"state rebuilt from the node's labels: notice \S+ .*already finished", timeout_s=20)
        daemon.wait_line(UNCORDONED, timeout_s=10)
        wait_for(lambda: not cordoned(cluster_with_pods), 5)
    finally:
        assert daemon.stop() == 0


def test_off_leaves_the_cordon(cluster_with_pods):
    env = cluster_with_pods.env(ON_SCHEDULED_EVENT="cordon", UNCORDON_AFTER_REBOOT="false")
    handle_the_event(cluster_with_pods, env)
    state_file = cluster_with_pods.state_dir / "state.json"
    handled_before_this_boot(state_file)
    stays_cordoned_over_a_start(cluster_with_pods, env)


def notice_phase(cluster_with_pods) -> str:
    return json.loads((cluster_with_pods.state_dir / "state.json").read_text())["notices"][NOTICE_ID]["phase"]


def cordon_then(cluster_with_pods, env, then_imds: list, expect_line: str) -> Daemon:
    """Handle an active reboot event with a running agent, then change IMDS; returns the daemon
    once it logged expect_line (the caller stops it)."""
    event = reboot_event("active", in_s=3)
    cluster_with_pods.imds.set_scheduled([event])
    daemon = Daemon(env).start()
    daemon.wait_line(rf"notice {NOTICE_ID}: cordoned", timeout_s=20)
    wait_for(lambda: cordoned(cluster_with_pods), 5)
    cluster_with_pods.imds.set_scheduled([dict(event, **change) for change in then_imds])
    daemon.wait_line(expect_line, timeout_s=20)
    return daemon


def test_completed_event_uncordons_without_cancelling(cluster_with_pods):
    env = cluster_with_pods.env(ON_SCHEDULED_EVENT="cordon")
    daemon = cordon_then(cluster_with_pods, env, [{"State": "completed"}],
                         rf"notice {NOTICE_ID}: scheduled event completed; uncordoning")
    try:
        wait_for(lambda: not cordoned(cluster_with_pods), 5)
    finally:
        assert daemon.stop() == 0
    assert not daemon.find(r"cancelled"), daemon.output()
    assert notice_phase(cluster_with_pods) == "done"


def test_completed_event_with_off_stays_cordoned(cluster_with_pods):
    env = cluster_with_pods.env(ON_SCHEDULED_EVENT="cordon", UNCORDON_AFTER_REBOOT="false")
    daemon = cordon_then(cluster_with_pods, env, [{"State": "completed"}],
                         r"scheduled event completed; the node stays cordoned \(UNCORDON_AFTER_REBOOT=false\)")
    try:
        wait_polls(cluster_with_pods.imds, 3, path=SCHEDULED)  # a few more polls of the completed event
        assert cordoned(cluster_with_pods)
    finally:
        assert daemon.stop() == 0
    assert not daemon.find(r"cancelled|uncordon"), daemon.output()
    assert len(daemon.find(r"stays cordoned")) == 1
    assert notice_phase(cluster_with_pods) == "done"


def test_event_dropped_after_its_time_is_not_a_withdrawal(cluster_with_pods):
    # A daemon slow to start (a loaded machine) first sees the event within DRAIN_MARGIN of its
    # time: the window is then open and the deadline is first sight + DRAIN_WINDOW, which this
    # test waits out. A short window keeps that a few seconds, not two minutes.
    env = cluster_with_pods.env(ON_SCHEDULED_EVENT="cordon", UNCORDON_AFTER_REBOOT="false", DRAIN_WINDOW="3s")
    event = reboot_event("active", in_s=3)
    cluster_with_pods.imds.set_scheduled([event])
    daemon = Daemon(env).start()
    try:
        daemon.wait_line(rf"notice {NOTICE_ID}: cordoned", timeout_s=20)
        logged = daemon.find(rf"notice {NOTICE_ID} \(.*deadline (\S+)")[0].text
        deadline = parse_rfc3339_utc(re.search(r"deadline (\S+)", logged).group(1))
        # Wall time: the case is an event dropped after its time, so that time must pass first.
        time.sleep(max(0.0, (deadline - datetime.now(timezone.utc)).total_seconds()) + 0.5)
        cluster_with_pods.imds.set_scheduled([])
        daemon.wait_line(r"scheduled event no longer listed after its time; the node stays cordoned", timeout_s=10)
        assert cordoned(cluster_with_pods)
    finally:
        assert daemon.stop() == 0
    assert not daemon.find(r"cancelled"), daemon.output()
