"""nodeagent.kube.gate and throttle: the rules one node's API traffic obeys, on a fake clock."""

import random
import threading
from datetime import datetime, timedelta, timezone

import pytest

from nodeagent import jitter
from nodeagent.kube.gate import Answer, ApiGate, GateAbandoned, GateClosed, GateLimits, GatePolicy, Priority
from nodeagent.kube.throttle import is_pdb_refusal, is_throttling, retry_after_s
from tests.helpers import wait_for

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)
PDB_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."


def policy(**limits):
    return GatePolicy(GateLimits(**limits), random.Random(1), now=0.0)


# --- throttle: what the server asked for ----------------------------------------------------------


def test_retry_after_in_seconds_as_an_http_date_and_in_the_status_body():
    assert retry_after_s({"Retry-After": "2"}, None, NOW) == 2.0
    assert retry_after_s({"retry-after": " 7 "}, None, NOW) == 7.0
    date = "Sun, 06 Dec 2026 12:00:05 GMT"
    assert retry_after_s({"Retry-After": date}, None, NOW) == pytest.approx(5.0)
    assert retry_after_s({"Retry-After": "Sun, 06 Dec 2026 11:59:00 GMT"}, None, NOW) == 0.0  # past
    body = {"kind": "Status", "code": 429, "details": {"retryAfterSeconds": 3}}
    assert retry_after_s({}, body, NOW) == 3.0
    assert retry_after_s({"Retry-After": "1"}, body, NOW) == 1.0, "the header wins"


def test_retry_after_that_cannot_be_read_counts_as_not_given():
    assert retry_after_s(None, None, NOW) is None
    assert retry_after_s({"Retry-After": "soon"}, None, NOW) is None
    assert retry_after_s({"Retry-After": "-3"}, None, NOW) is None
    assert retry_after_s({}, {"details": {"retryAfterSeconds": "3"}}, NOW) is None
    assert retry_after_s({}, {"details": {"retryAfterSeconds": True}}, NOW) is None
    assert retry_after_s({}, {"details": ["x"]}, NOW) is None
    assert retry_after_s({}, "Too many requests", NOW) is None


def test_a_pdb_refusal_is_not_throttling_and_a_503_is():
    assert is_pdb_refusal(429, PDB_MESSAGE) and not is_throttling(429, PDB_MESSAGE)
    assert is_throttling(429, "Too many requests, please try again later.")
    assert is_throttling(503, "service unavailable") and not is_pdb_refusal(503, PDB_MESSAGE)
    assert not is_throttling(500, "boom") and not is_throttling(409, "conflict")


# --- jitter ------------------------------------------------------------------------------------


def test_jitter_shapes_stay_in_their_bounds_and_spread():
    rng = random.Random(3)
    spreads = [jitter.spread(1.0, rng) for _ in range(500)]
    afters = [jitter.after(2.0, rng) for _ in range(500)]
    stretches = [jitter.stretch(60.0, rng) for _ in range(500)]
    assert 0.5 <= min(spreads) and max(spreads) <= 1.0 and max(spreads) - min(spreads) > 0.4
    assert 2.0 <= min(afters) and max(afters) <= 2.0 + jitter.MAX_EXTRA_S and max(afters) - min(afters) > 0.8
    assert 60.0 <= min(stretches) and max(stretches) <= 72.0
    assert jitter.after(0.0, rng) <= 0.1 and jitter.spread(0.0, rng) == 0.0


# --- the policy --------------------------------------------------------------------------------


def test_a_throttling_answer_pauses_every_request_at_least_the_servers_wait():
    gate = policy()
    gate.take(0.0)
    pause = gate.done(0.0, Answer.THROTTLED, 2.0)
    assert 2.0 <= pause <= 3.0
    assert gate.wait_s(0.5) == pytest.approx(pause - 0.5), "nothing leaves during the pause"
    assert gate.wait_s(1.99) > 0
    assert gate.wait_s(pause) == 0.0


def test_a_429_without_retry_after_pauses_the_default_second():
    gate = policy()
    gate.take(0.0)
    assert 1.0 <= gate.done(0.0, Answer.THROTTLED, None) <= 2.0


def test_in_flight_limit_slow_starts_then_halves_once_per_pause_then_grows_by_one_per_round():
    gate = policy(max_in_flight=32, initial_in_flight=4)
    for _ in range(4):
        assert gate.wait_s(0.0) == 0.0
        gate.take(0.0)
    assert gate.wait_s(0.0) is None, "the fifth waits for an answer"
    for _ in range(4):
        gate.done(0.0, Answer.OK)
    assert gate.limit == 8.0, "slow start: one more per success"
    for _ in range(40):
        gate.take(0.0)
        gate.done(0.0, Answer.OK)
    assert gate.limit == 32.0, "never past DRAIN_PARALLELISM"
    for _ in range(5):  # five answers of one burst
        gate.take(0.0)
    for _ in range(5):
        gate.done(0.0, Answer.THROTTLED, 1.0)
    assert gate.limit == 16.0, "cut once per pause, not once per answer"
    gate.take(10.0)
    gate.done(10.0, Answer.THROTTLED, 1.0)
    assert gate.limit == 8.0
    for _ in range(8):
        gate.take(20.0)
        gate.done(20.0, Answer.OK)
    assert gate.limit == pytest.approx(9.0, abs=0.1), "after throttling: about one more per round"
    for _ in range(10):
        gate.take(30.0)
        gate.done(30.0, Answer.THROTTLED, 1.0)
        gate.paused_until = 0.0  # the next answer is a new pause
        gate._cut_until = 0.0
    assert gate.limit == 1.0, "never below one"


def test_failures_without_an_answer_neither_grow_nor_cut_the_limit():
    gate = policy(initial_in_flight=4)
    gate.take(0.0)
    gate.done(0.0, Answer.FAILED)
    assert gate.limit == 4.0 and not gate.paused(0.0) and gate.in_flight == 0


def test_the_rate_ceiling_is_a_token_bucket():
    gate = policy(max_in_flight=1000, initial_in_flight=1000, qps=50.0, burst=100)
    for _ in range(100):
        assert gate.wait_s(0.0) == 0.0
        gate.take(0.0)
    assert gate.wait_s(0.0) == pytest.approx(1 / 50)
    assert gate.wait_s(0.02) == 0.0, "one token back after 1/qps"
    gate.take(0.02)
    assert gate.wait_s(0.02) > 0


# --- the gate, for threads (real threads, a fake clock) ------------------------------------------


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def monotonic(self):
        return self.t

    def now(self):
        return NOW + timedelta(seconds=self.t)


def enter_in_thread(gate, priority, order, **kwargs):
    def run():
        try:
            gate.enter(priority, **kwargs)
            order.append(priority)
        except (GateClosed, GateAbandoned) as error:
            order.append(type(error).__name__)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_waiting_requests_leave_by_priority_drain_first_then_node_then_events():
    clock = FakeClock()
    gate = ApiGate(GateLimits(max_in_flight=1, initial_in_flight=1), clock, random.Random(1))
    gate.enter(Priority.NODE)  # holds the only place
    order = []
    threads = [enter_in_thread(gate, Priority.EVENT, order)]
    wait_for(lambda: len(gate._waiting) == 1)
    threads.append(enter_in_thread(gate, Priority.NODE, order))
    wait_for(lambda: len(gate._waiting) == 2)
    threads.append(enter_in_thread(gate, Priority.DRAIN, order))
    wait_for(lambda: len(gate._waiting) == 3)
    for expected in range(1, 4):
        gate.leave(Answer.OK)
        wait_for(lambda: len(order) == expected)
    assert order == [Priority.DRAIN, Priority.NODE, Priority.EVENT]


def test_a_request_at_its_last_safe_moment_leaves_during_a_pause_and_says_so():
    clock = FakeClock()
    gate = ApiGate(GateLimits(), clock, random.Random(1))
    gate.enter(Priority.DRAIN)
    gate.leave(Answer.THROTTLED, 3600.0)  # an absurd Retry-After against a two-minute deadline
    ticket = gate.enter(Priority.DRAIN, act_by=clock.t)  # its last safe moment is now
    assert ticket.urgent and ticket.against_pause_s > 3500 and gate.urgent == 1


def test_a_paused_request_waits_for_its_last_safe_moment_not_for_the_servers_hour():
    clock = FakeClock()
    gate = ApiGate(GateLimits(), clock, random.Random(1))
    gate.enter(Priority.DRAIN)
    gate.leave(Answer.THROTTLED, 3600.0)
    order = []
    thread = enter_in_thread(gate, Priority.DRAIN, order, act_by=90.0)
    wait_for(lambda: len(gate._waiting) == 1)
    threading.Event().wait(0.05)
    assert order == [], "held by the pause"
    clock.t = 90.0
    with gate._cond:
        gate._cond.notify_all()
    thread.join(5)
    assert order == [Priority.DRAIN] and gate.urgent == 1


def test_close_and_give_up_release_waiters_without_sending():
    clock = FakeClock()
    gate = ApiGate(GateLimits(), clock, random.Random(1))
    gate.enter(Priority.DRAIN)
    gate.leave(Answer.THROTTLED, 60.0)
    order = []
    stop = threading.Event()
    abandoned = enter_in_thread(gate, Priority.DRAIN, order, give_up=stop.is_set)
    waiting = enter_in_thread(gate, Priority.EVENT, order)
    wait_for(lambda: len(gate._waiting) == 2)
    stop.set()
    abandoned.join(5)
    assert order == ["GateAbandoned"]
    gate.close()
    waiting.join(5)
    assert order == ["GateAbandoned", "GateClosed"]
