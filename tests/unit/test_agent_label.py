"""nodeagent.kube.agent_label: the node's state label is written now, and kept until it holds."""
from __future__ import annotations

import threading
import time

from nodeagent.kube.agent_label import AgentLabel
from nodeagent.kube.errors import ApiError
from nodeagent.retry import Backoff

QUICK = Backoff(0.01, 0.05)


class FlakyLabel:
    """The API: refuses (429) the first `failures` writes, records every write that lands."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.landed: list[str] = []
        self.in_flight = 0
        self.overlapped = False
        self.lock = threading.Lock()

    def write(self, state: str, give_up) -> None:
        with self.lock:
            self.in_flight += 1
            self.overlapped |= self.in_flight > 1
        try:
            time.sleep(0.005)
            if self.failures:
                self.failures -= 1
                raise ApiError(429, "TooManyRequests", "Too many requests", "PATCH", "/api/v1/nodes/n")
            self.landed.append(state)
        finally:
            with self.lock:
                self.in_flight -= 1


def wait_until(predicate, seconds=5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_a_write_that_holds_at_once_is_done_on_the_callers_thread():
    api = FlakyLabel()
    label = AgentLabel(api.write, written="watching", retry=QUICK)
    assert label.set("draining") is True
    assert api.landed == ["draining"] and label.written == "draining"
    assert label.set("draining") is True and api.landed == ["draining"], "an unchanged value is not written"


def test_a_throttled_write_is_retried_until_it_holds():
    api = FlakyLabel(failures=3)
    label = AgentLabel(api.write, written="watching", retry=QUICK)
    try:
        assert label.set("draining") is False
        assert wait_until(lambda: label.written == "draining")
        assert api.landed == ["draining"] and label.failures == 3
    finally:
        label.close()


def test_only_the_newest_value_is_written_and_writes_never_overlap():
    api = FlakyLabel(failures=2)
    label = AgentLabel(api.write, written="watching", retry=QUICK)
    try:
        label.set("draining")  # fails: handed to the keeper
        label.set("drained")  # fails too: the keeper now wants "drained"
        assert wait_until(lambda: label.written == "drained")
        time.sleep(0.1)
        assert api.landed[-1] == "drained" and "draining" not in api.landed
        assert not api.overlapped
    finally:
        label.close()
