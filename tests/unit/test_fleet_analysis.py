"""The fleet benchmark's reading of the API simulator's request log (pure: records made by hand)."""

from __future__ import annotations

from benchmarks.fleet import early_requests, peak_in_flight, rate_per_second
from nodeagent_sim.kube import RequestRecord

EVICT = "/api/v1/namespaces/default/pods/web-0/eviction"


def rec(t: float, path: str = EVICT, *, method: str = "POST", verb: str = "create", status: int = 201,
        throttled: bool = False, retry_after: str = "", duration_s: float = 0.0) -> RequestRecord:
    return RequestRecord(t, method, path, {}, "system:node:n", status, verb, duration_s=duration_s,
                         throttled=throttled, retry_after=retry_after)


def test_a_retry_after_the_window_is_not_early():
    log = [rec(0.0, status=429, throttled=True, retry_after="2", duration_s=0.1), rec(2.2)]
    assert early_requests(log) == (1, 0, 0)


def test_the_same_request_too_soon_and_any_request_inside_the_window():
    log = [rec(0.0, status=429, throttled=True, retry_after="2", duration_s=0.1),
           rec(0.5, "/api/v1/namespaces/default/pods/web-1/eviction"),  # another request, inside the window
           rec(1.0)]  # the same one, retried early
    assert early_requests(log) == (1, 1, 1)


def test_a_watch_on_the_same_path_is_not_the_retry_of_a_list():
    log = [rec(0.0, "/api/v1/pods", method="GET", verb="list", status=429, throttled=True, retry_after="2"),
           rec(0.3, "/api/v1/pods", method="GET", verb="watch", status=200),
           rec(2.5, "/api/v1/pods", method="GET", verb="list", status=200)]
    assert early_requests(log) == (1, 0, 1)


def test_requests_in_flight_before_the_answer_do_not_count():
    log = [rec(0.0, status=429, throttled=True, retry_after="2", duration_s=0.5),
           rec(0.2, "/api/v1/namespaces/default/pods/web-1/eviction")]  # sent before the 429 came back
    assert early_requests(log) == (1, 0, 0)


def test_a_request_crossing_the_answer_on_the_way_does_not_count_one_after_it_does():
    log = [rec(0.0, status=429, throttled=True, retry_after="2", duration_s=0.1),
           rec(0.13, "/api/v1/namespaces/default/pods/web-1/eviction"),  # 30 ms after the answer
           rec(0.5, "/api/v1/namespaces/default/pods/web-2/eviction")]
    assert early_requests(log) == (1, 0, 1)
    assert early_requests(log[:2]) == (1, 0, 0)


def test_rate_and_peak_in_flight():
    log = [rec(5.1), rec(5.2), rec(5.3), rec(6.5), rec(8.9), rec(2.0)]
    assert rate_per_second(log, 5.0, 9.0) == (3, 5 / 4, 4)
    overlapping = [rec(0.0, duration_s=1.0), rec(0.5, duration_s=1.0), rec(0.7, duration_s=0.1),
                   rec(0.1, "/api/v1/pods", method="GET", verb="watch", duration_s=100.0)]
    assert peak_in_flight(overlapping) == 3
