"""Fault matrix, a throttling API server: 429 and 503 with Retry-After on every kind of call.

Every case: the real daemon against ImdsSim and KubeSim (HTTPS, the node's own credentials); the
five checks of tests.cluster.Cluster.check, and one more: after a throttling answer, nothing at all
leaves this node before the wait the server asked for (the gate pauses all of the node's requests).
"""
from __future__ import annotations

from typing import List

import pytest

from benchmarks import fleet
from nodeagent.kube.throttle import DEFAULT_PAUSE_S
from tests.cluster import Cluster
from tests.helpers import wait_for

DRAINED = r"drained: "
THROTTLED = r"the API server is throttling this node \(.*\); all of this node's requests wait"
EARLY_TOLERANCE_S = 0.05  # the simulator stamps arrival, the client its send: clock noise only
# A request that reaches the server this soon after a throttling answer left it was sent before
# the client could have read that answer (requests in flight together): not a request too soon.
IN_FLIGHT_S = 0.3


def asked_wait_s(record) -> float:
    """The wait a throttling answer asked for: its Retry-After (seconds or HTTP date), else the
    agent's own 1 s pause."""
    return fleet.retry_after_s(record) if record.retry_after.strip() else DEFAULT_PAUSE_S


def sent_too_soon(cluster: Cluster, cap_s: float = 3600.0) -> List[str]:
    """Requests that reached the server within a throttling answer's asked wait (from the same node),
    except those sent at their last safe moment (the log says so)."""
    records = sorted(cluster.kube.requests, key=lambda r: r.t_monotonic)
    early = []
    for answer in (r for r in records if r.throttled):
        answered = fleet.answered_at(answer)
        until = answered + min(asked_wait_s(answer), cap_s) - EARLY_TOLERANCE_S
        for other in records:
            if other.user == answer.user and answered + IN_FLIGHT_S < other.t_monotonic < until:
                early.append(f"{other.method} {other.path} {other.t_monotonic - answered:.2f}s after "
                             f"{answer.status} to {answer.method} {answer.path}")
    return early


THROTTLING = {
    # name: (inject arguments, count)
    "eviction-429-retry-after-2": (dict(status=429, retry_after=2, method="POST", path_regex=r"/eviction$"), 4),
    "eviction-503-retry-after-2": (dict(status=503, retry_after=2, method="POST", path_regex=r"/eviction$"), 4),
    "list-429-retry-after-2": (dict(status=429, retry_after=2, method="GET", path_regex=r"^/api/v1/pods$"), 2),
    "node-patch-429-retry-after-2": (dict(status=429, retry_after=2, method="PATCH", path_regex=r"/nodes/"), 2),
    "node-patch-503-retry-after-2": (dict(status=503, retry_after=2, method="PATCH", path_regex=r"/nodes/"), 2),
    "event-429-retry-after-2": (dict(status=429, retry_after=2, method="POST", path_regex=r"/events$"), 3),
    "eviction-429-http-date": (dict(status=429, retry_after=3, retry_after_form="date", method="POST",
                                    path_regex=r"/eviction$"), 2),
    "eviction-429-status-details": (dict(status=429, retry_after_form="absent", details_retry_after=2,
                                         method="POST", path_regex=r"/eviction$"), 2),
    "eviction-429-no-header": (dict(status=429, retry_after_form="absent", method="POST",
                                    path_regex=r"/eviction$"), 4),
    "eviction-429-apf-plain-text": (dict(status=429, retry_after=2, plain_text=True, method="POST",
                                         path_regex=r"/eviction$"), 4),
}


@pytest.mark.parametrize("fault", list(THROTTLING))
def test_throttling_answers_pause_the_whole_node(make_cluster, fault):
    """Throttling answers (429/503 that are not PDB refusals) on each kind of call.

    Case: evictions, the pod list, the node PATCH or an Event answer 429 or 503 with `Retry-After: 2`, 2-4 times
    Outcome: "the API server is throttling this node (...)" once; no request of this node reaches the server within 2 s of a throttling answer (the whole node pauses, not just the one request); cordoned and drained by the deadline
    Case: an eviction answers 429 with Retry-After as an HTTP date, or only with the Status `details.retryAfterSeconds`, or with neither (then 1 s), or with APF's plain-text body
    Outcome: each form is read and obeyed the same way; drained
    """
    inject, count = THROTTLING[fault]
    cluster = make_cluster()
    cluster.add_workload()
    cluster.start_agent()
    cluster.kube.inject(count=count, **inject)
    notice = cluster.spot(40)
    cluster.daemon.wait_line(DRAINED, timeout_s=40)
    if "event" in fault:
        assert wait_for(lambda: cluster.kube.count(status=inject["status"]) == count, 20)
    cluster.finish().check(notice, fault_log=THROTTLED)
    assert cluster.kube.count(status=inject["status"]) == count
    assert sent_too_soon(cluster) == []


def test_throttled_watch_and_relist(make_cluster):
    """Case: mid-drain the pod watch is cut and its re-list and restart answer 429 `Retry-After: 2`, twice
    Outcome: the watch waits out the pause and resumes; no request within 2 s of either answer; drained
    """
    cluster = make_cluster(time_scale=0.1)  # a 30 s grace lasts 3 s: the drain waits on the watch
    cluster.add_workload()
    cluster.start_agent()
    notice = cluster.spot(40)
    cluster.daemon.wait_line(r"draining \d+ pods", timeout_s=10)
    assert wait_for(lambda: cluster.kube.open_watches() > 0, 5)
    cluster.kube.inject(count=2, status=429, retry_after=2, method="GET", path_regex=r"^/api/v1/pods$")
    cluster.kube.cut_watches(abrupt=True)
    cluster.daemon.wait_line(DRAINED, timeout_s=40)
    cluster.finish().check(notice, fault_log=THROTTLED)
    assert cluster.kube.count(status=429) == 2
    assert sent_too_soon(cluster) == []


def test_an_hour_of_retry_after_against_a_two_minute_deadline(make_cluster):
    """Case: the first eviction answers 429 `Retry-After: 3600` (an absurd hour) on a 2-minute spot notice
    Outcome: the node waits as asked until each pod's last safe moment, then sends its evictions anyway, logging "sent at its last safe moment, against the API server's request to wait ...s more"; drained by the deadline
    """
    cluster = make_cluster()
    cluster.add_workload(grace_s=10)
    cluster.start_agent()
    cluster.kube.inject(count=1, status=429, retry_after=3600, method="POST", path_regex=r"/eviction$")
    notice = cluster.spot(40)
    cluster.daemon.wait_line(DRAINED, timeout_s=60)
    cluster.finish().check(notice, fault_log=r"sent at its last safe moment, against the API server's request")
    first = min(r.t_monotonic for r in cluster.kube.requests if r.throttled)
    later = [r for r in cluster.kube.requests if r.t_monotonic > first + 1 and r.method == "POST"
             and r.path.endswith("/eviction")]
    assert later, "the evictions went at their last safe moment"
    assert min(r.t_monotonic for r in later) - first > 5, "not before: the node honoured the pause until then"
