"""A stop that comes while the drain's first request waits its turn at the gate ends the drain
cleanly: nothing is sent, nothing raises, the result says it was interrupted."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from nodeagent.kube.errors import RequestAbandoned
from nodeagent.kube.drain import Drainer
from nodeagent.kube.pod_rules import DrainOptions

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)


class AbandoningApi:
    """The pod list waits at the gate; the stop comes meanwhile: RequestAbandoned."""

    requests = 0
    stopped = False
    lists = 0

    def list_all(self, path, query, *, priority=None, act_by=None, give_up=None):
        self.lists += 1
        assert give_up is not None and not give_up()
        self.stopped = True  # the agent's stop, while the request waits its turn
        assert give_up(), "the drain passes its stop flag to the gate"
        raise RequestAbandoned("GET /api/v1/pods: not sent, its response was stopped")


class FixedClock:
    def now(self):
        return NOW

    def monotonic(self):
        return 0.0

    def sleep(self, seconds):
        raise AssertionError("no retry after an abandoned request")


def test_a_stop_while_the_pod_list_waits_at_the_gate_interrupts_the_drain():
    options = DrainOptions(deadline=NOW + timedelta(seconds=120), margin_s=15, force_at_deadline=True)
    api = AbandoningApi()
    drainer = Drainer(api, "node-a", options, should_stop=lambda: api.stopped, clock=FixedClock())  # type: ignore[arg-type]
    result = drainer.run()
    assert api.lists == 1
    assert result.interrupted and result.total == 0 and result.evicted == []
