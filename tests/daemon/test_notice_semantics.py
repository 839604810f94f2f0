"""The decision rules through the real daemon against both simulators: notices as AWS really
serves them (docs/notices.md). The same rules are covered fast, with fake ports, in tests/unit."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests.cluster import NODE, REBALANCE
from tests.helpers import wait_for


def gmt(moment: datetime) -> str:
    return moment.strftime("%d %b %Y %H:%M:%S GMT")


def now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def cluster(make_cluster):
    made = make_cluster()
    made.kube.add_pod("web-0", node=NODE, owner_kind="ReplicaSet", owner_name="web", grace_s=20)
    return made


def start_agent(cluster):
    return cluster.start_agent(DRAIN_MARGIN="2s")


def cordoned(cluster) -> bool:
    return bool(cluster.kube.node(NODE)["spec"].get("unschedulable"))


def test_open_maintenance_window_drains_with_each_pods_grace_and_keeps_pdbs(cluster):
    cluster.kube.add_pod("guarded-0", node=NODE, owner_kind="ReplicaSet", owner_name="g", labels={"app": "g"})
    cluster.kube.add_pdb("g", "default", selector={"app": "g"}, min_available=1)
    daemon = start_agent(cluster)
    try:
        cluster.imds.set_scheduled([{"NotBefore": gmt(now() - timedelta(hours=1)), "Code": "system-maintenance",
                                     "EventId": "instance-event-0eeeeeeeeeeeeeeee", "State": "active",
                                     "NotAfter": gmt(now() + timedelta(days=2))}])
        daemon.wait_line(r"window open: NotAfter\); response: drain", timeout_s=10)
        seen = {}

        def terminating():
            pod = cluster.kube.pod("default", "web-0")
            if pod and pod["metadata"].get("deletionTimestamp"):
                seen["grace"] = pod["metadata"]["deletionGracePeriodSeconds"]
            return "grace" in seen or pod is None

        assert wait_for(terminating, 10), daemon.output()
        assert seen.get("grace") == 20, f"{seen}\n{daemon.output()}"
        cluster.wait_polls(4)  # the drain goes on, and the PDB still holds guarded-0
        assert cluster.kube.pod("default", "guarded-0") is not None, daemon.output()  # PDB kept
        assert not cluster.writes(r"/pods/guarded-0$"), daemon.output()  # no delete
    finally:
        daemon.stop()


def test_one_odd_scheduled_entry_does_not_hide_a_valid_reboot(cluster):
    daemon = start_agent(cluster)
    try:
        cluster.imds.set_scheduled([
            {"NotBefore": gmt(now() + timedelta(hours=3)), "Code": "system-reboot", "EventId": "instance-event-0bad"},
            {"NotBefore": gmt(now() + timedelta(hours=2)), "Code": "system-reboot", "State": "active",
             "EventId": "instance-event-0good"},
            {"NotBefore": gmt(now() + timedelta(hours=4)), "Code": "host-retirement", "State": "active",
             "EventId": "instance-event-0odd"},
        ])
        daemon.wait_line(r"notice scheduled-instance-event-0bad: scheduled event has no State; handled as active",
                         timeout_s=10)
        daemon.wait_line(r"notice scheduled-instance-event-0bad \(scheduled: system-reboot\).*response: drain")
        daemon.wait_line(r"notice scheduled-instance-event-0good \(scheduled: system-reboot\).*response: drain")
        daemon.wait_line(r"'host-retirement' is not one of the documented codes; handled as maintenance")
        assert wait_for(lambda: cluster.kube.pod("default", "web-0") is None, 15), daemon.output()
        assert cordoned(cluster)
    finally:
        daemon.stop()


def test_a_spot_notice_with_an_unknown_action_is_drained(cluster):
    daemon = start_agent(cluster)
    try:
        cluster.imds.set_spot({"action": "reboot", "time": (now() + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")})
        daemon.wait_line(r"unknown spot action 'reboot'; handled as terminate", timeout_s=10)
        daemon.wait_line(r"drained: 1 evicted", timeout_s=15)
        assert not daemon.find(r"IMDS poll \(spot-itn\)")
    finally:
        daemon.stop()


def test_one_empty_answer_does_not_undo_a_cordon(cluster):
    daemon = start_agent(cluster)  # POLL_INTERVAL 0.5s
    try:
        notice_time = now()
        cluster.imds.set_rebalance(notice_time)
        assert wait_for(lambda: cordoned(cluster), 10), daemon.output()
        for _ in range(2):  # gone for one poll, then back
            cluster.imds.set_rebalance(None)
            cluster.wait_polls(1, path=REBALANCE)
            cluster.imds.set_rebalance(notice_time)
            cluster.wait_polls(2, path=REBALANCE)
        assert cordoned(cluster) and not daemon.find(r"cancelled"), daemon.output()
        cluster.imds.set_rebalance(None)  # withdrawn for real: 3 answered polls over 5 s
        daemon.wait_line(r"notice rebalance-\S+ cancelled: notice withdrawn from IMDS", timeout_s=15)
        assert wait_for(lambda: not cordoned(cluster), 10), daemon.output()
    finally:
        daemon.stop()


@pytest.mark.parametrize("state", ["Warmed:Stopped", "Warmed:Terminated"])
def test_warm_pool_states_drain_with_on_asg_termination(cluster, state):
    daemon = start_agent(cluster)
    try:
        cluster.imds.set_asg_state(state)
        daemon.wait_line(rf"\(asg: {state}\).*response: drain", timeout_s=10)
        daemon.wait_line(r"drained: 1 evicted", timeout_s=15)
    finally:
        daemon.stop()


def test_a_blocked_pod_far_from_its_deadline_is_not_retried_every_second(cluster):
    cluster.kube.add_pod("guarded-0", node=NODE, owner_kind="ReplicaSet", owner_name="g", labels={"app": "g"})
    cluster.kube.add_pdb("g", "default", selector={"app": "g"}, min_available=1)
    daemon = start_agent(cluster)
    try:
        cluster.imds.set_scheduled([{"NotBefore": gmt(now() + timedelta(days=2)), "Code": "instance-retirement",
                                     "EventId": "instance-event-0fff", "State": "active"}])
        assert wait_for(lambda: cluster.kube.count(path_regex=r"guarded-0/eviction$", status=429) >= 1, 15)
        cluster.wait_polls(12)  # six seconds of polls
        refused = cluster.kube.count(path_regex=r"guarded-0/eviction$", status=429)
        # A tenth of two days is far past the one-minute cap: one try, the next a minute later.
        assert refused == 1, f"{refused} refusals in 12 polls\n{daemon.output()}"
    finally:
        daemon.stop()


def test_a_steady_5xx_on_the_spot_path_does_not_hide_a_scheduled_event(cluster):
    """The spot path is polled first; a 500 there is an answer about that path only."""
    daemon = start_agent(cluster)
    try:
        cluster.imds.inject(100000, status=500, path_prefix="spot/")
        cluster.imds.set_scheduled([{"NotBefore": gmt(now() + timedelta(days=2)), "Code": "system-maintenance",
                                     "EventId": "instance-event-0fffffffffffffff5", "State": "active"}])
        daemon.wait_line(r"notice scheduled-instance-event-0fffffffffffffff5 .*response: drain", timeout_s=15)
        assert wait_for(lambda: cordoned(cluster), 10), daemon.output()
        assert daemon.find(r"IMDS poll \(spot-itn\): IMDS answered HTTP 500"), daemon.output()
    finally:
        daemon.stop()


def test_a_superseded_event_gone_from_imds_is_not_resumed_when_its_successor_is_cancelled(cluster):
    """E1 drains; IMDS replaces it with the more urgent E2 (E1 no longer listed), which takes the
    node over; E2 is then cancelled. E1 stays over: no resumed drain, no eviction for it."""
    cluster.kube.add_pod("guarded-0", node=NODE, owner_kind="ReplicaSet", owner_name="g", labels={"app": "g"})
    cluster.kube.add_pdb("g", "default", selector={"app": "g"}, min_available=1)  # both drains stay blocked
    first, second = "instance-event-0e1e1e1e1e1e1e1e1", "instance-event-0e2e2e2e2e2e2e2e2"

    def event(event_id, hours, state="active"):
        return {"NotBefore": gmt(now() + timedelta(hours=hours)), "Code": "system-maintenance", "EventId": event_id,
                "State": state}

    daemon = start_agent(cluster)
    try:
        cluster.imds.set_scheduled([event(first, 48)])
        assert wait_for(lambda: cluster.kube.pod("default", "web-0") is None, 15), daemon.output()
        assert wait_for(lambda: cluster.evictions("guarded-0"), 10), daemon.output()  # E1's drain is blocked
        cluster.imds.set_scheduled([event(second, 1)])
        daemon.wait_line(rf"notice scheduled-{first}: superseded by scheduled-{second}", timeout_s=10)
        cluster.imds.set_scheduled([event(second, 1, state="canceled")])
        daemon.wait_line(rf"notice scheduled-{second} cancelled: scheduled event is now canceled", timeout_s=10)
        daemon.wait_line(rf"notice scheduled-{first}: .*no longer in IMDS either; not resumed", timeout_s=10)
        assert wait_for(lambda: not cordoned(cluster), 10), daemon.output()
        settled = len(cluster.evictions("guarded-0"))
        cluster.wait_polls(4)
        assert len(cluster.evictions("guarded-0")) == settled, daemon.output()
        assert not daemon.find(rf"notice scheduled-{first}: the notice that superseded it was cancelled")
        assert not cordoned(cluster)
    finally:
        daemon.stop()
