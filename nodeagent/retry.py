"""The one retry loop (built on tenacity) that every part that retries uses: IMDS requests, the
Kubernetes API calls of the response, the drain's pod listing and watch, Events and the webhook.

Each caller passes what differs: its schedule (how long to wait after the n-th failure), which
errors or results are worth another attempt, when to stop (a deadline, a stop flag, a count),
how it sleeps (a fake clock in tests, a stop event that cuts a wait short) and what giving up
means (raise, or return a last answer).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Generic, TypeVar

from tenacity import RetryCallState, Retrying

from nodeagent import jitter

T = TypeVar("T")


@dataclass(frozen=True)
class Failure(Generic[T]):
    """One failed attempt, as the schedule, stop, before_sleep and gave_up callbacks see it."""

    attempts: int  # attempts made so far (1 after the first)
    error: BaseException | None  # None when a result was judged worth retrying
    result: T | None  # that result (None when the attempt raised)
    wait_s: float  # the wait before the next attempt (0.0 while the schedule is computing it)
    interrupted: bool = False  # gave_up only: the sleep was cut short (a stop was requested)


@dataclass(frozen=True)
class Backoff:
    """first_s, doubling after each failure, never more than max_s; with equal jitter (half the
    step, plus up to the other half at random: jitter.spread) unless `jittered` is off, so the
    agents of a fleet that failed together do not retry together."""

    first_s: float
    max_s: float
    jittered: bool = True
    rng: random.Random | None = field(default=None, compare=False, repr=False)

    def step(self, attempts: int) -> float:
        return min(self.max_s, self.first_s * 2 ** (attempts - 1))

    def __call__(self, failure: Failure[Any]) -> float:
        step = self.step(failure.attempts)
        if not self.jittered:
            return step
        # Made only on a failure: most calls succeed at once and never need it.
        return jitter.spread(step, self.rng or random.Random())


class _Interrupted(Exception):
    pass


def _never(_: Any) -> bool:
    return False


def _reraise(failure: Failure[Any]) -> Any:
    if failure.error is not None:
        raise failure.error
    return failure.result


def retry(
    attempt: Callable[[], T],
    *,
    schedule: Callable[[Failure[T]], float],
    transient: Callable[[BaseException], bool],
    retry_result: Callable[[T], bool] = _never,
    stop: Callable[[Failure[T]], bool] = _never,
    sleep: Callable[[float], object] = time.sleep,
    before_sleep: Callable[[Failure[T]], None] | None = None,
    gave_up: Callable[[Failure[T]], T] = _reraise,
) -> T:
    """Call `attempt` until it returns a result that `retry_result` does not reject.

    An error that `transient` rejects propagates at once, unchanged. After each failure: the
    schedule gives the wait, `stop` (seeing that wait) may end the loop, `before_sleep` runs, then
    `sleep`; a sleep that returns False was interrupted and also ends the loop. A loop that ends
    returns what `gave_up` returns (by default: the last error is raised, or the last result
    returned).
    """

    # The first attempt runs before tenacity is involved, or even set up: nearly every call
    # succeeds at once (an IMDS poll makes several a second), and tenacity's bookkeeping would
    # cost more than the request.
    # A first attempt that failed is replayed as tenacity's first, so the schedule, stop and
    # callbacks see it as attempt 1 as usual.
    try:
        result = attempt()
    except BaseException as error:
        if not transient(error):
            raise
        first: Callable[[], T] = _raiser(error)
    else:
        if not retry_result(result):
            return result
        first = _returner(result)
    return _retry_after_first(
        first, attempt, schedule, transient, retry_result, stop, sleep, before_sleep, gave_up
    )


def _retry_after_first(
    first: Callable[[], T],
    attempt: Callable[[], T],
    schedule: Callable[[Failure[T]], float],
    transient: Callable[[BaseException], bool],
    retry_result: Callable[[T], bool],
    stop: Callable[[Failure[T]], bool],
    sleep: Callable[[float], object],
    before_sleep: Callable[[Failure[T]], None] | None,
    gave_up: Callable[[Failure[T]], T],
) -> T:
    """The loop after a first attempt that failed; `first` replays that attempt to tenacity."""

    def failure(state: RetryCallState, wait_s: float) -> Failure[T]:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            return Failure(state.attempt_number, outcome.exception(), None, wait_s)
        return Failure(state.attempt_number, None, outcome.result(), wait_s)

    def do_sleep(seconds: float) -> None:
        if sleep(float(seconds)) is False:
            raise _Interrupted()

    last: list[Failure[T]] = []

    def remember(state: RetryCallState) -> None:
        # Kept here: tenacity clears the state's outcome before it sleeps.
        last[:] = [failure(state, state.upcoming_sleep)]
        if before_sleep is not None:
            before_sleep(last[0])

    def worth_retrying(state: RetryCallState) -> bool:
        outcome = state.outcome
        assert outcome is not None
        if outcome.failed:
            error = outcome.exception()
            return error is not None and transient(error)
        return retry_result(outcome.result())

    retrying = Retrying(
        wait=lambda state: max(0.0, schedule(failure(state, 0.0))),
        stop=lambda state: stop(failure(state, state.upcoming_sleep)),
        retry=worth_retrying,
        before_sleep=remember,
        sleep=do_sleep,
        retry_error_callback=lambda state: gave_up(failure(state, state.upcoming_sleep)),
        reraise=True,
    )
    pending = [first]

    def again() -> T:
        return pending.pop()() if pending else attempt()

    try:
        return retrying(again)
    except _Interrupted:
        return gave_up(replace(last[0], interrupted=True))


def _raiser(error: BaseException) -> Callable[[], Any]:
    def replay() -> Any:
        raise error

    return replay


def _returner(result: T) -> Callable[[], T]:
    return lambda: result
