"""nodeagent.retry: the one retry loop, with a recorded (not real) sleep."""

import random

import pytest

from nodeagent.retry import Backoff, Failure, retry


class Flaky:
    def __init__(self, failures, error=OSError("down"), result="ok"):
        self.failures, self.error, self.result, self.calls = failures, error, result, 0

    def __call__(self):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return self.result


def test_backoff_doubles_from_first_to_max():
    waits = [Backoff(0.2, 1.0, jittered=False)(Failure(n, None, None, 0.0)) for n in range(1, 6)]
    assert waits == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_backoff_is_jittered_between_half_and_all_of_each_step():
    backoff = Backoff(0.2, 1.0, rng=random.Random(7))
    for attempts, step in [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.0), (9, 1.0)]:
        waits = [backoff(Failure(attempts, None, None, 0.0)) for _ in range(200)]
        assert all(step / 2 <= wait <= step for wait in waits)
        assert max(waits) - min(waits) > step / 4, "a fleet's retries must spread, not coincide"


def test_transient_errors_are_retried_on_the_schedule_until_success():
    slept = []
    flaky = Flaky(3)
    got = retry(flaky, schedule=Backoff(0.5, 1.0, jittered=False), transient=lambda e: isinstance(e, OSError), sleep=slept.append)
    assert got == "ok" and flaky.calls == 4 and slept == [0.5, 1.0, 1.0]


def test_an_error_that_is_not_transient_propagates_unchanged_at_once():
    error = ValueError("bad request")
    flaky = Flaky(5, error=error)
    with pytest.raises(ValueError) as raised:
        retry(flaky, schedule=Backoff(0.1, 1.0), transient=lambda e: isinstance(e, OSError), sleep=lambda s: None)
    assert raised.value is error and flaky.calls == 1


def test_stop_sees_the_next_wait_and_gave_up_sees_the_last_error():
    seen = []

    def gave_up(failure):
        seen.append((failure.attempts, str(failure.error), failure.wait_s, failure.interrupted))
        return "gave up"

    got = retry(
        Flaky(10),
        schedule=Backoff(1.0, 8.0, jittered=False),
        transient=lambda e: True,
        stop=lambda failure: failure.wait_s >= 4.0,  # a deadline 4 s away
        sleep=lambda s: None,
        gave_up=gave_up,
    )
    assert got == "gave up" and seen == [(3, "down", 4.0, False)]


def test_a_sleep_returning_false_is_an_interruption():
    got = retry(
        Flaky(10),
        schedule=Backoff(1.0, 8.0, jittered=False),
        transient=lambda e: True,
        sleep=lambda s: False,
        gave_up=lambda failure: (failure.attempts, failure.interrupted),
    )
    assert got == (1, True)


def test_results_can_be_retried_and_the_last_one_is_returned_by_default():
    answers = iter([503, 503, 503])
    got = retry(
        lambda: next(answers),
        schedule=Backoff(0.0, 0.0),
        transient=lambda e: False,
        retry_result=lambda status: status >= 500,
        stop=lambda failure: failure.attempts >= 3,
        sleep=lambda s: None,
    )
    assert got == 503


def test_by_default_the_last_error_is_raised_when_the_loop_stops():
    with pytest.raises(OSError, match="down"):
        retry(Flaky(10), schedule=Backoff(0.0, 0.0), transient=lambda e: True, stop=lambda f: f.attempts >= 2)
