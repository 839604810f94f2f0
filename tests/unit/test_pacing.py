"""Per-path poll pacing, with plain numbers: no sockets, no clock."""
from __future__ import annotations

import itertools

import pytest

from nodeagent import notices
from nodeagent.config import ConfigError, ConfigSource, load_settings
from nodeagent.pacing import PollPlan, effective_interval, next_poll_at, path_intervals, plan_polls

SPOT, ASG = notices.SPOT_ACTION_PATH, notices.ASG_PATH
REBALANCE, SCHEDULED = notices.REBALANCE_PATH, notices.SCHEDULED_PATH
INTERVALS = path_intervals(fast_s=1.0, rebalance_s=5.0, scheduled_s=30.0)
NONE_HOT: frozenset = frozenset()


def plan(now, last, hot=NONE_HOT, intervals=INTERVALS, fast_s=1.0):
    return plan_polls(now, last, intervals, hot, fast_s)


def test_defaults_map_each_path_to_its_pace():
    assert INTERVALS == {SPOT: 1.0, ASG: 1.0, REBALANCE: 5.0, SCHEDULED: 30.0}


def test_never_polled_paths_are_all_due_at_once():
    result = plan(100.0, {})
    assert result == PollPlan(due=(SPOT, ASG, REBALANCE, SCHEDULED))


def test_after_one_second_only_the_fast_paths_are_due():
    last = {SPOT: 100.0, ASG: 100.0, REBALANCE: 100.0, SCHEDULED: 100.0}
    assert plan(101.0, last) == PollPlan(due=(SPOT, ASG))
    assert plan(100.5, last) == PollPlan(due=())


def test_simulated_minute_polls_each_path_at_its_own_pace():
    last = {}
    counts = {path: 0 for path in INTERVALS}
    now = 0.0
    wakeups = 0
    while now < 60.0:
        result = plan(now, last)
        for path in result.due:
            counts[path] += 1
            last[path] = now
        wakeups += 1
        now = next_poll_at(now, last, INTERVALS, NONE_HOT, 1.0)
    assert counts == {SPOT: 60, ASG: 60, REBALANCE: 12, SCHEDULED: 2}
    assert wakeups == 60  # slow paths ride along with the fast ones, no extra wake-ups
    assert sum(counts.values()) == 134  # IMDS GETs a minute, against 240 when all go every second


def loop_gaps(minutes: float, poll_takes_s: float, intervals=INTERVALS, fast_s: float = 1.0,
              wakes_late_s: float = 0.0003) -> dict:
    """The agent's loop in plain numbers: plan at wake-up, each poll taking `poll_takes_s`, then
    sleep until next_poll_at, waking `wakes_late_s` after it (as a real sleep does). Returns the
    longest gap between two polls of each path."""
    last: dict = {}
    previous: dict = {}
    gaps = {path: 0.0 for path in intervals}
    now = 0.0
    while now < minutes * 60:
        due = plan_polls(now, last, intervals, NONE_HOT, fast_s).due
        for path in due:
            if path in previous:
                gaps[path] = max(gaps[path], now - previous[path])
            previous[path] = last[path] = now
        now = next_poll_at(now + poll_takes_s, last, intervals, NONE_HOT, fast_s) + wakes_late_s
    return gaps


def test_no_path_waits_longer_than_its_interval_when_polls_take_time():
    """A slow path's poll that fell due just before the fast paths once pushed them a whole
    interval out (a 1.7 s notice -> cordon at a 1 s poll): the next wake-up counted from the end
    of that poll instead of from when the fast paths were last polled."""
    for poll_takes_s, wakes_late_s in itertools.product((0.001, 0.004, 0.02), (0.0003, 0.0012, 0.002)):
        gaps = loop_gaps(30, poll_takes_s, wakes_late_s=wakes_late_s)
        slack = poll_takes_s + wakes_late_s + 1e-9  # a path falling due mid-poll waits for its end
        assert gaps[SPOT] <= 1.0 + slack and gaps[ASG] <= 1.0 + slack, (poll_takes_s, wakes_late_s, gaps)
        assert gaps[REBALANCE] <= 5.0 + slack and gaps[SCHEDULED] <= 30.0 + slack, (poll_takes_s, gaps)
    sub_second = path_intervals(fast_s=0.25, rebalance_s=5.0, scheduled_s=30.0, asg_s=1.0)
    gaps = loop_gaps(10, 0.004, sub_second, fast_s=0.25)
    assert gaps[SPOT] <= 0.251 and gaps[ASG] <= 1.001, gaps


def test_next_poll_at_counts_from_the_last_poll_of_each_path():
    last = {SPOT: 9.0, ASG: 9.0, REBALANCE: 4.994, SCHEDULED: 0.0}
    # At 9.994 only rebalance is due (spot is 6 ms away, beyond the 5 ms slack); that poll ends
    # at 9.996, and spot is still due at 10.0, not at 10.996.
    assert plan(9.994, last).due == (REBALANCE,)
    last[REBALANCE] = 9.994
    assert next_poll_at(9.996, last, INTERVALS, NONE_HOT, 1.0) == 10.0
    # Fell due while a long poll of rebalance ran: polled at once.
    assert next_poll_at(10.02, last, INTERVALS, NONE_HOT, 1.0) == 10.02
    # Skipped while IMDS was unreachable: one interval from now, never a busy loop.
    polled_before = {SPOT: 49.9, ASG: 40.0, REBALANCE: 40.0, SCHEDULED: 40.0}
    assert next_poll_at(50.0, polled_before, INTERVALS, NONE_HOT, 1.0,
                        skipped={ASG, REBALANCE, SCHEDULED}) == 50.9
    assert next_poll_at(50.0, polled_before, INTERVALS, NONE_HOT, 1.0,
                        skipped={SPOT, ASG, REBALANCE, SCHEDULED}) == 51.0
    assert next_poll_at(5.0, {}, INTERVALS, NONE_HOT, 1.0) == 6.0
    assert next_poll_at(5.0, {SPOT: 50.0}, {SPOT: 1.0}, NONE_HOT, 1.0) == 6.0  # clock went back
    with pytest.raises(ValueError):
        next_poll_at(0.0, {}, {}, NONE_HOT, 1.0)


def test_a_hot_path_is_polled_at_the_fast_pace_until_it_cools():
    last = {SPOT: 10.0, ASG: 10.0, REBALANCE: 10.0, SCHEDULED: 10.0}
    hot = frozenset({SCHEDULED})
    assert plan(11.0, last, hot) == PollPlan(due=(SPOT, ASG, SCHEDULED))
    assert effective_interval(SCHEDULED, INTERVALS, hot, 1.0) == 1.0
    assert plan(11.0, last) == PollPlan(due=(SPOT, ASG))  # cooled: 30 s again
    assert plan(40.0, last).due == (SPOT, ASG, REBALANCE, SCHEDULED)


def test_hot_never_slows_a_path_down():
    fast_rebalance = path_intervals(fast_s=1.0, rebalance_s=0.5, scheduled_s=30.0)
    assert effective_interval(REBALANCE, fast_rebalance, frozenset({REBALANCE}), 1.0) == 0.5


def test_next_due_is_the_earliest_path_not_the_fast_pace():
    # Only the slow paths are listed: the next wake-up is the rebalance one, 5 s on.
    slow = {REBALANCE: 5.0, SCHEDULED: 30.0}
    assert plan(20.0, {REBALANCE: 20.0, SCHEDULED: 20.0}, intervals=slow) == PollPlan(())
    assert next_poll_at(20.0, {REBALANCE: 20.0, SCHEDULED: 20.0}, slow, NONE_HOT, 1.0) == 25.0
    # Rebalance is due (polled at 26: next due at 31); scheduled, polled at 0, falls due first, at 30.
    assert plan(26.0, {REBALANCE: 21.0, SCHEDULED: 0.0}, intervals=slow) == PollPlan(due=(REBALANCE,))
    assert next_poll_at(26.0, {REBALANCE: 26.0, SCHEDULED: 0.0}, slow, NONE_HOT, 1.0) == 30.0


def test_paths_due_a_few_milliseconds_apart_are_polled_together():
    last = {SPOT: 100.002, ASG: 100.002, REBALANCE: 96.0, SCHEDULED: 100.0}
    assert plan(101.0, last).due == (SPOT, ASG, REBALANCE)
    assert plan(100.9, last).due == ()


def test_a_last_poll_in_the_future_counts_as_just_polled():
    assert plan(5.0, {SPOT: 50.0, ASG: 5.0, REBALANCE: 5.0, SCHEDULED: 5.0}) == PollPlan(())


def test_unknown_paths_are_ignored_and_bad_input_refused():
    assert plan(10.0, {"other": 1.0}, hot=frozenset({"other"})).due == (SPOT, ASG, REBALANCE, SCHEDULED)
    with pytest.raises(ValueError):
        plan_polls(0.0, {}, {}, NONE_HOT, 1.0)
    with pytest.raises(ValueError):
        plan_polls(0.0, {}, INTERVALS, NONE_HOT, 0.0)
    with pytest.raises(ValueError):
        path_intervals(fast_s=1.0, rebalance_s=0.0, scheduled_s=30.0)
    with pytest.raises(ValueError):
        path_intervals(fast_s=1.0, rebalance_s=5.0, scheduled_s=30.0, asg_s=0.0)


def test_the_asg_path_follows_the_fast_pace_unless_given_its_own():
    assert path_intervals(fast_s=0.25, rebalance_s=5.0, scheduled_s=30.0)[ASG] == 0.25
    own = path_intervals(fast_s=0.25, rebalance_s=5.0, scheduled_s=30.0, asg_s=1.0)
    assert (own[SPOT], own[ASG]) == (0.25, 1.0)
    # polled 0.3 s ago: spot is due, ASG is not; once hot (its notice answered), ASG is due too
    last = {SPOT: 9.7, ASG: 9.7, REBALANCE: 9.7, SCHEDULED: 9.7}
    assert plan_polls(10.0, last, own, NONE_HOT, 0.25).due == (SPOT,)
    assert plan_polls(10.0, last, own, frozenset({ASG}), 0.25).due == (SPOT, ASG)


# --- the config keys ------------------------------------------------------------------------------


def test_config_defaults_and_overrides():
    settings = load_settings([], {})
    assert (settings.poll_interval, settings.poll_interval_rebalance,
            settings.poll_interval_scheduled) == (1.0, 5.0, 30.0)
    settings = load_settings([ConfigSource("f", "POLL_INTERVAL_REBALANCE=2s\n")],
                             {"NODEAGENT_POLL_INTERVAL_SCHEDULED": "2m"})
    assert (settings.poll_interval_rebalance, settings.poll_interval_scheduled) == (2.0, 120.0)
    assert settings.sources["POLL_INTERVAL_SCHEDULED"] == "env NODEAGENT_POLL_INTERVAL_SCHEDULED"
    assert load_settings([], {}).poll_interval_asg is None  # empty: POLL_INTERVAL
    assert load_settings([], {"NODEAGENT_POLL_INTERVAL_ASG": "1s"}).poll_interval_asg == 1.0


@pytest.mark.parametrize("key, value", [
    ("POLL_INTERVAL_REBALANCE", "0.05s"), ("POLL_INTERVAL_REBALANCE", "6m"),
    ("POLL_INTERVAL_SCHEDULED", "0s"), ("POLL_INTERVAL_SCHEDULED", "11m"),
    ("POLL_INTERVAL_SCHEDULED", "often"), ("POLL_INTERVAL_ASG", "0.05s"), ("POLL_INTERVAL_ASG", "2m"),
])
def test_config_rejects_bad_intervals(key, value):
    with pytest.raises(ConfigError) as caught:
        load_settings([], {f"NODEAGENT_{key}": value})
    assert caught.value.key == key


def test_imds_url_must_be_plain_http():
    assert load_settings([], {"NODEAGENT_IMDS_URL": "http://127.0.0.1:8080"}).imds_url == "http://127.0.0.1:8080"
    with pytest.raises(ConfigError) as caught:
        load_settings([], {"NODEAGENT_IMDS_URL": "https://169.254.169.254"})
    assert caught.value.key == "IMDS_URL"
