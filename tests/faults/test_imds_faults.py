"""Fault matrix, IMDS: storms, throttling, timeouts, refusals, a hung token PUT, 401s, bad bodies,
notices in the past, notices that come and go, scheduled events that flip.

Every case: the real daemon against ImdsSim and KubeSim; the five checks of tests.cluster.Cluster.check.
"""
from __future__ import annotations

import time
from datetime import timedelta

import pytest

from nodeagent_sim.imds import ImdsSim
from nodeagent.clock import utcnow
from tests.cluster import NODE, Cluster, NoticeRef, to_monotonic
from tests.helpers import wait_for

DRAINED = r"drained: "


def drain_after(cluster: Cluster, in_s: float = 30, timeout_s: float = 40):
    notice = cluster.spot(in_s)
    cluster.daemon.wait_line(DRAINED, timeout_s=timeout_s)
    return notice


@pytest.mark.parametrize("status", [500, 429])
def test_error_storm(make_cluster, status):
    """IMDS error storms around the notice.

    Case: IMDS answers HTTP 500 to every request (token PUTs included) for 15 requests as the notice appears
    Outcome: each poll retries 3 times with short backoff, logs the error once ("IMDS poll (spot-itn): IMDS answered HTTP 500 ... after 3 attempt(s)") and "IMDS poll recovered" after; the notice is acted on at the first good poll and the node is drained
    Case: IMDS throttles with HTTP 429 for 15 requests as the notice appears
    Outcome: same as the 5xx storm: backoff, one log line for the throttling, drained once IMDS answers
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    cluster.imds.inject(15, status=status)
    notice = drain_after(cluster)
    cluster.daemon.wait_line(r"IMDS poll recovered")
    cluster.finish().check(notice, fault_log=rf"IMDS poll \(spot-itn\): IMDS answered HTTP {status} to ")


def test_timeouts(make_cluster):
    """Case: IMDS accepts the connection but answers spot/instance-action only after 1.5 s (read timeout 1 s), for 4 requests
    Outcome: each request times out after 1 s and is retried; the poll logs "IMDS ... did not answer within 1s" once; detection is late by the timeouts only, and the node is drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    # On spot/ only: unfiltered, where the poll cycle stood decided which path timed out.
    cluster.imds.inject(4, delay_s=1.5, path_prefix="spot/")
    notice = drain_after(cluster)
    cluster.finish().check(notice, fault_log=r"IMDS poll \(spot-itn\): IMDS at \S+ did not answer within 1s")


def test_refused_connections(make_cluster, tmp_path):
    """Case: IMDS goes away (connection refused) for 3 s and comes back as a new endpoint (new tokens) with the notice
    Outcome: "IMDS ... refused the connection" logged once; the agent keeps polling, fetches a new token when the old one gets 401, and drains the node
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    port = cluster.imds.port
    cluster.imds.stop()
    time.sleep(3)  # the outage itself: IMDS is away for 3 s
    cluster.imds = ImdsSim(port=port).start()
    notice = drain_after(cluster)
    cluster.finish().check(notice, fault_log=r"IMDS poll \(spot-itn\): IMDS at \S+ refused the connection")


@pytest.mark.parametrize("allow_v1", [False, True])
def test_token_put_never_answers(make_cluster, allow_v1):
    """A token PUT that is never answered (how hop limit 1 looks from a container).

    Case: the IMDSv2 token expires and the token PUT then hangs (never answered), with the notice pending; IMDS_ALLOW_V1=false
    Outcome: the PUT times out after 1 s (not retried); the poll logs "did not answer the IMDSv2 token request within 1s ... hop limit must be at least 2"; the loop keeps its pace (no wedge) and acts as soon as a token is issued again; drained
    Case: the same with IMDS_ALLOW_V1=true on an endpoint that also serves IMDSv1
    Outcome: the agent logs "falling back to IMDSv1" and drains while the PUT still hangs
    """
    imds = ImdsSim(allow_v1=allow_v1).start()
    cluster = make_cluster(imds=imds)
    cluster.add_workload()
    cluster.start_agent(IMDS_ALLOW_V1="true" if allow_v1 else "false")
    cluster.imds.hang_token_put(True)
    cluster.imds.expire_tokens()
    if allow_v1:
        notice = drain_after(cluster)
        fault_log = r"IMDSv2 token request went unanswered; falling back to IMDSv1"
    else:
        cluster.daemon.wait_line(r"did not answer the IMDSv2 token request", timeout_s=10)
        notice = cluster.spot(30)
        # Not wedged: a new try (a new connection, the hung one is given up) every poll + 1 s timeout.
        tries_before = cluster.imds.connections
        assert wait_for(lambda: cluster.imds.connections >= tries_before + 2, 15)
        cluster.imds.hang_token_put(False)
        cluster.daemon.wait_line(DRAINED, timeout_s=30)
        fault_log = (r"IMDS poll \(spot-itn\): IMDS did not answer the IMDSv2 token request within 1s\. "
                     r"If nodeagent runs in a container, the instance's metadata hop limit must be at least 2")
    cluster.finish().check(notice, fault_log=fault_log)


def test_401_storm(make_cluster):
    """Case: IMDS answers 401 to 10 GETs of spot/instance-action (tokens "revoked"), then all tokens expire
    Outcome: each 401 gets a fresh token and one retry; a second 401 is logged ("answered HTTP 401 ... even with a freshly issued token"); once IMDS accepts tokens again the notice is acted on; drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    cluster.imds.inject(10, status=401, path_prefix="spot/")
    notice = cluster.spot(30)
    cluster.imds.expire_tokens()
    cluster.daemon.wait_line(DRAINED, timeout_s=40)
    cluster.finish().check(
        notice, fault_log=r"IMDS poll \(spot-itn\): IMDS answered HTTP 401 to GET spot/instance-action even with a freshly issued token")


def test_malformed_truncated_and_undecodable_bodies(make_cluster):
    """Case: spot/instance-action serves truncated JSON, then text that is not JSON, then JSON of the wrong shape, then bytes that are not UTF-8 (while a rebalance recommendation arrives), then the real notice
    Outcome: each bad body is logged once ("malformed IMDS body ..." / "not valid UTF-8") and never acted on; the other paths are still polled (the rebalance cordons the node while spot/ is undecodable); the real notice is handled once and drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    future = (utcnow() + timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    bad_bodies = [
        ('{"action": "terminate", "time": "' + future[:7], r"malformed IMDS body: .*spot/instance-action"),
        ("<html>503 Service Unavailable</html>", r"malformed IMDS body: .*not JSON|malformed IMDS body: .*JSON"),
        ('{"action": 5, "time": "' + future + '"}', r"malformed IMDS body: .*'action' must be a string"),
    ]
    for body, pattern in bad_bodies:
        cluster.imds.set_spot(body)
        cluster.daemon.wait_line(pattern, timeout_s=10)
    cluster.imds.set_spot(None)
    cluster.imds.inject(1000, body=b'{"action": "terminate", "time": "\xff\xfe\xfa"}', path_prefix="spot/")
    cluster.daemon.wait_line(r"not valid UTF-8", timeout_s=10)
    cluster.imds.set_rebalance()
    cluster.daemon.wait_line(r"cordoned \S+ for rebalance-", timeout_s=10)
    assert not cluster.evictions(), "acted on a bad body"
    cluster.imds.clear_faults()
    notice = drain_after(cluster)
    cluster.finish().check(notice, fault_log=r"IMDS poll \(spot-itn\): malformed IMDS body")
    assert len(cluster.find(r"'action' must be a string")) == 1, "a repeated bad body was logged more than once"


def test_oversized_body(make_cluster):
    """Case: spot/instance-action answers a 1 MB body, 4 times
    Outcome: the read stops at 64 KiB ("exceeds 65536 bytes; refusing to read more"), nothing is acted on, the next good body is handled once; drained
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    cluster.imds.inject(4, body=b"{" + b" " * 1_000_000 + b"}", path_prefix="spot/")
    cluster.daemon.wait_line(r"exceeds 65536 bytes", timeout_s=10)
    notice = drain_after(cluster)
    cluster.finish().check(notice, fault_log=r"IMDS poll \(spot-itn\): IMDS response to GET \S+ exceeds 65536 bytes; refusing to read more")


def test_notice_time_already_past(make_cluster):
    """Case: the notice's time is already 30 s in the past when it is first seen
    Outcome: "deadline ... (in Ns; time already past: now + DRAIN_MARGIN, zero grace)": the deadline becomes first sight + DRAIN_MARGIN, pods are evicted with grace 0 and the node is drained; nothing is written after that floored deadline
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent(DRAIN_MARGIN="6s")
    notice = cluster.spot(-30)
    cluster.daemon.wait_line(DRAINED, timeout_s=20)
    deadline = cluster.agent_deadline(notice.id)
    assert deadline > notice.deadline
    cluster.finish().check(notice, deadline=deadline, fault_log=r"\(in \d+s; time already past: now \+ DRAIN_MARGIN, zero grace\)")


def test_spot_notice_appears_then_disappears(make_cluster):
    """Case: a spot notice is served for one second, disappears (404), then reappears unchanged
    Outcome: the agent acts at first sight and carries on when the notice vanishes (a spot interruption is never withdrawn), logging "no longer in IMDS; carrying on"; the reappearance is the same notice and is not handled again; drained
    """
    cluster = make_cluster()
    cluster.add_workload(grace_s=60)  # 1.2 s to terminate: still draining when the notice vanishes
    cluster.start_agent()
    notice = cluster.spot(30)
    cluster.daemon.wait_line(r"cordoned ", timeout_s=10)
    body = {"action": "terminate", "time": notice.deadline.strftime("%Y-%m-%dT%H:%M:%SZ")}
    cluster.imds.set_spot(None)
    cluster.daemon.wait_line(r"no longer in IMDS", timeout_s=10)
    cluster.imds.set_spot(body)
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.wait_polls(3)  # a few more polls with the notice back
    cluster.finish().check(notice, fault_log=rf"notice {notice.id} is no longer in IMDS; carrying on")


def test_rebalance_appears_then_disappears(make_cluster):
    """Case: a rebalance recommendation appears (response: cordon), disappears, then reappears unchanged
    Outcome: cordoned at first sight; on withdrawal "cancelled: notice withdrawn from IMDS" and the node is uncordoned with our labels removed; the reappearance is not acted on again
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent(DRAIN_WINDOW="30s")
    noticed = utcnow()
    cluster.imds.set_rebalance(noticed)
    cluster.daemon.wait_line(r"cordoned \S+ for rebalance-", timeout_s=10)
    cluster.imds.set_rebalance(None)
    cluster.daemon.wait_line(r"cancelled: notice withdrawn from IMDS", timeout_s=10)
    assert wait_for(lambda: not cluster.kube.node(NODE)["spec"].get("unschedulable"), 10)
    cluster.imds.set_rebalance(noticed)
    cluster.wait_polls(4)  # the reappearance is polled and not acted on
    notice_id = cluster.find(r"notice (rebalance-\S+) \(")[0].split()[1]
    deadline = cluster.agent_deadline(notice_id)
    cluster.finish()
    cluster.check(NoticeRef(notice_id, deadline, to_monotonic(deadline)), drained=False, phase="cancelled",
                  fault_log=r"cancelled: notice withdrawn from IMDS")
    node = cluster.kube.node(NODE)
    assert not node["spec"].get("unschedulable")
    assert "nodeagent.io/notice-id" not in node["metadata"]["labels"]


def test_scheduled_event_flips_between_states(make_cluster):
    """Case: a scheduled instance-stop event goes active -> canceled -> active -> completed, a few polls apart
    Outcome: drained when active; on "canceled" the notice is cancelled and the node uncordoned; the re-activation of the cancelled event is logged ("is back (active) after it was cancelled") and not acted on twice; "completed" changes nothing
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    not_before = (utcnow() + timedelta(seconds=30)).replace(microsecond=0)
    event = {"NotBefore": not_before.strftime("%d %b %Y %H:%M:%S GMT"), "Code": "instance-stop",
             "Description": "The instance is scheduled for stop", "EventId": "instance-event-0d59937288b749b32",
             "NotAfter": "", "State": "active"}
    cluster.imds.set_scheduled([event])
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    cluster.imds.set_scheduled([dict(event, State="canceled")])
    cluster.daemon.wait_line(r"cancelled: scheduled event is now canceled", timeout_s=10)
    assert wait_for(lambda: not cluster.kube.node(NODE)["spec"].get("unschedulable"), 10)
    cluster.imds.set_scheduled([dict(event, State="active")])
    cluster.daemon.wait_line(r"is back \(active\) after it was cancelled", timeout_s=10)
    cluster.imds.set_scheduled([dict(event, State="completed")])
    cluster.wait_polls(3)  # "completed" is polled and changes nothing
    notice = NoticeRef("scheduled-instance-event-0d59937288b749b32", not_before, to_monotonic(not_before))
    cluster.finish().check(notice, phase="cancelled", fault_log=r"cancelled: scheduled event is now canceled")
    assert not cluster.kube.node(NODE)["spec"].get("unschedulable")
    assert len(cluster.find(r"cancelled: scheduled event")) == 1


def test_slow_paths_after_an_outage(make_cluster):
    """Case: with per-path pacing (rebalance every 2 s, scheduled every 4 s), IMDS refuses connections for 3 s and comes back serving a rebalance recommendation and a scheduled instance-stop
    Outcome: each slow path is polled again within its own interval after IMDS is back: the rebalance is cordoned within 2 s (plus one fast poll) and the scheduled event is drained; nothing waits for a later cycle
    """
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent(POLL_INTERVAL_REBALANCE="2s", POLL_INTERVAL_SCHEDULED="4s")
    port = cluster.imds.port
    cluster.imds.stop()
    time.sleep(3)  # the outage itself: IMDS refuses connections for 3 s
    not_before = (utcnow() + timedelta(seconds=40)).replace(microsecond=0)
    event = {"NotBefore": not_before.strftime("%d %b %Y %H:%M:%S GMT"), "Code": "instance-stop",
             "Description": "The instance is scheduled for stop", "EventId": "instance-event-0d59937288b749b33",
             "NotAfter": "", "State": "active"}
    cluster.imds = ImdsSim(port=port).start()
    back = time.monotonic()
    cluster.imds.set_rebalance(utcnow())
    cluster.imds.set_scheduled([event])
    rebalance = cluster.daemon.wait_line(r"cordoned \S+ for rebalance-", timeout_s=10)
    scheduled = cluster.daemon.wait_line(r"notice scheduled-instance-event-0d59937288b749b33 \(", timeout_s=10)
    assert rebalance.t - back < 2 + 0.5 + 0.5, "rebalance not seen within its interval"
    assert scheduled.t - back < 4 + 0.5 + 0.5, "scheduled event not seen within its interval"
    cluster.daemon.wait_line(DRAINED, timeout_s=30)
    notice = NoticeRef("scheduled-instance-event-0d59937288b749b33", not_before, to_monotonic(not_before))
    cluster.finish().check(notice, fault_log=r"IMDS poll \(spot-itn\): IMDS at \S+ refused the connection")
