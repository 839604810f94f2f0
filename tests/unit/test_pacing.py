"""Per-path poll pacing, with plain numbers: no sockets, no clock."""
from __future__ import annotations

import pytest

from nodeagent import notices
from nodeagent.config import ConfigError, ConfigSource, load_settings
from nodeagent.pacing import PollPlan, effective_interval, path_intervals, plan_polls

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
    assert result == PollPlan(due=(SPOT, ASG, REBALANCE, SCHEDULED), next_due_at=101.0)


def test_after_one_second_only_the_fast_paths_are_due():
    last = {SPOT: 100.0, ASG: 100.0, REBALANCE: 100.0, SCHEDULED: 100.0}
    assert plan(101.0, last) == PollPlan(due=(SPOT, ASG), next_due_at=102.0)
    assert plan(100.5, last) == PollPlan(due=(), next_due_at=101.0)


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
        now = result.next_due_at
    assert counts == {SPOT: 60, ASG: 60, REBALANCE: 12, SCHEDULED: 2}
    assert wakeups == 60  # slow paths ride along with the fast ones, no extra wake-ups
    assert sum(counts.values()) == 134  # IMDS GETs a minute, against 240 when all go every second


def test_a_hot_path_is_polled_at_the_fast_pace_until_it_cools():
    last = {SPOT: 10.0, ASG: 10.0, REBALANCE: 10.0, SCHEDULED: 10.0}
    hot = frozenset({SCHEDULED})
    assert plan(11.0, last, hot) == PollPlan(due=(SPOT, ASG, SCHEDULED), next_due_at=12.0)
    assert effective_interval(SCHEDULED, INTERVALS, hot, 1.0) == 1.0
    assert plan(11.0, last) == PollPlan(due=(SPOT, ASG), next_due_at=12.0)  # cooled: 30 s again
    assert plan(40.0, last).due == (SPOT, ASG, REBALANCE, SCHEDULED)


def test_hot_never_slows_a_path_down():
    fast_rebalance = path_intervals(fast_s=1.0, rebalance_s=0.5, scheduled_s=30.0)
    assert effective_interval(REBALANCE, fast_rebalance, frozenset({REBALANCE}), 1.0) == 0.5


def test_next_due_is_the_earliest_path_not_the_fast_pace():
    # Only the slow paths are listed: the next wake-up is the rebalance one, 5 s on.
    slow = {REBALANCE: 5.0, SCHEDULED: 30.0}
    assert plan(20.0, {REBALANCE: 20.0, SCHEDULED: 20.0}, intervals=slow) == PollPlan((), 25.0)
    # Rebalance is due and next due at 31; scheduled, polled at 0, falls due first, at 30.
    assert plan(26.0, {REBALANCE: 21.0, SCHEDULED: 0.0}, intervals=slow) == PollPlan(
        due=(REBALANCE,), next_due_at=30.0)


def test_paths_due_a_few_milliseconds_apart_are_polled_together():
    last = {SPOT: 100.002, ASG: 100.002, REBALANCE: 96.0, SCHEDULED: 100.0}
    assert plan(101.0, last).due == (SPOT, ASG, REBALANCE)
    assert plan(100.9, last).due == ()


def test_a_last_poll_in_the_future_counts_as_just_polled():
    assert plan(5.0, {SPOT: 50.0, ASG: 5.0, REBALANCE: 5.0, SCHEDULED: 5.0}) == PollPlan((), 6.0)


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
