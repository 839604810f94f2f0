"""CycleCollector: a full collection before the first request after a failed connection, spaced
by at least its interval; PeriodicCollection: one a minute from the loop (fake clock, counted
collections)."""
from nodeagent.cycles import CycleCollector, PeriodicCollection


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(interval_s: float = 1.0):
    clock, runs = Clock(), []
    collector = CycleCollector(clock, collect=lambda: runs.append(clock.now) or 0, min_interval_s=interval_s)
    return collector, clock, runs


def test_requests_without_failures_never_collect():
    collector, clock, runs = make()
    for _ in range(50):
        collector.before_request()
        clock.now += 0.5
    assert runs == []


def test_the_request_after_a_failure_collects_once():
    collector, _, runs = make()
    collector.failed()
    collector.before_request()
    collector.before_request()
    assert runs == [100.0]


def test_failures_within_the_interval_wait_for_it_and_are_not_forgotten():
    collector, clock, runs = make(interval_s=1.0)
    collector.failed()
    collector.before_request()  # collects at 100.0
    clock.now = 100.4
    collector.failed()
    collector.before_request()  # too soon
    clock.now = 100.9
    collector.before_request()  # still too soon
    clock.now = 101.0
    collector.before_request()  # owed, and the interval has passed
    clock.now = 105.0
    collector.before_request()  # nothing owed
    assert runs == [100.0, 101.0]


def test_an_outage_collects_at_most_once_per_interval():
    collector, clock, runs = make(interval_s=1.0)
    for _ in range(100):  # ten seconds of failing requests, ten a second
        collector.before_request()
        collector.failed()
        clock.now += 0.1
    assert 9 <= len(runs) <= 11


def test_the_loop_collects_and_freezes_at_its_first_tick_then_collects_once_a_minute():
    clock, runs = Clock(), []
    periodic = PeriodicCollection(clock, collect=lambda: runs.append(clock.now) or 0, every_s=60.0,
                                  freeze=lambda: runs.append("freeze"))
    for _ in range(400):  # 200 s of polls every half second
        periodic.tick()
        clock.now += 0.5
    assert runs == [100.0, "freeze", 160.0, 220.0, 280.0]


def test_a_long_pause_between_ticks_collects_once_not_to_catch_up():
    clock, runs = Clock(), []
    periodic = PeriodicCollection(clock, collect=lambda: runs.append(clock.now) or 0, every_s=60.0,
                                  freeze=lambda: None)
    periodic.tick()
    clock.now += 600.0
    periodic.tick()
    periodic.tick()
    clock.now += 59.0
    periodic.tick()
    clock.now += 1.0
    periodic.tick()
    assert runs == [100.0, 700.0, 760.0]
