"""The engine end to end with fake ports: the agent's shell, the decision core, the notice store
and the worker thread, driven by a fake clock. No sockets, no subprocesses: a two-day scheduled
event runs in well under a second."""
from __future__ import annotations

import json
from datetime import timedelta
from typing import Optional

import pytest

from nodeagent import config, decide
from nodeagent.agent import Agent
from nodeagent.clock import iso
from nodeagent.state import AgentState, NoticeRecord
from tests.fakes import FakeClock, FakeImds, FakeResponder, MemoryFiles, NullNotifier
from tests.helpers import wait_for

SCHEDULED = "events/maintenance/scheduled"
SPOT = "spot/instance-action"
REBALANCE = "events/recommendations/rebalance"


def gmt(moment) -> str:
    return moment.strftime("%d %b %Y %H:%M:%S GMT")


class RecordingReporter:
    """Keeps the steps and the records it is told were cancelled, and the notices it is told were
    forgotten."""

    def __init__(self) -> None:
        self.steps: list = []
        self.cancels: list = []
        self.forgotten_ids: list = []

    def notice_received(self, notice, record, plan) -> None: ...

    def step(self, record, reason, message) -> None:
        self.steps.append((record.id, reason))

    def finished(self, record) -> None: ...

    def cancelled(self, record) -> None:
        self.cancels.append(record)

    def forgotten(self, notice_ids) -> None:
        self.forgotten_ids.extend(notice_ids)

    def polled(self, ok, errors) -> None: ...

    def flush(self, timeout_s) -> bool:
        return True

    def close(self) -> None: ...


class Engine:
    def __init__(self, responder: Optional[FakeResponder] = None, state: Optional[AgentState] = None,
                 boot_time: float = 0.0, **keys: str):
        self.clock = FakeClock()
        self.imds = FakeImds()
        self.responder = responder or FakeResponder()
        self.files = MemoryFiles(state)
        # Every path polled on every 1 s tick unless a test says otherwise (the pacing tests do).
        paced = {"POLL_INTERVAL_REBALANCE": "1s", "POLL_INTERVAL_SCHEDULED": "1s"}
        self.settings = config.load_settings([], {}, {"DRAIN_MARGIN": "5s", **paced, **keys})
        self.reporter = RecordingReporter()
        self.agent = Agent(self.settings, self.responder, imds=self.imds, state_file=self.files,  # type: ignore[arg-type]
                           notifier=NullNotifier(), clock=self.clock, boot_time=boot_time,
                           reporters=[self.reporter])  # type: ignore[list-item]

    def __enter__(self) -> "Engine":
        assert self.agent.start()
        self.wait(lambda: self.agent.worker.ready)
        return self

    def __exit__(self, *exc) -> None:
        self.agent.shutdown()

    @staticmethod
    def wait(condition) -> None:
        wait_for(condition, 5.0, interval_s=0.001, message="the worker did not get there")

    def tick(self, advance_s: float = 1.0, settle: bool = True) -> None:
        self.clock.advance(advance_s)
        self.agent.tick()
        if settle:
            self.settle()

    def settle(self) -> None:
        """Wait for the worker, then let the loop apply what it reported (as its next wake-up would)."""
        self.wait(lambda: self.agent.worker.idle)
        self.agent.apply_reports()

    def scheduled(self, state: str = "active", not_before=None, not_after=None, code="instance-retirement") -> None:
        event = {"NotBefore": gmt(not_before), "Code": code, "EventId": "instance-event-0aaaaaaaaaaaaaaaa",
                 "State": state}
        if not_after is not None:
            event["NotAfter"] = gmt(not_after)
        self.imds.bodies[SCHEDULED] = json.dumps([event])

    def record(self, notice_id: str) -> NoticeRecord:
        return self.agent.store.get(notice_id)


EVENT_ID = "scheduled-instance-event-0aaaaaaaaaaaaaaaa"


def test_cancel_mid_drain_stops_the_drain_and_uncordons():
    """A cancel mid-drain uncordons the node and stops the drain: no eviction, no drained label after."""
    responder = FakeResponder(pods=3, hold_at=1)
    with Engine(responder, ON_SCHEDULED_EVENT="drain") as engine:
        engine.scheduled(not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        assert responder.holding.wait(5)  # one pod evicted, the drain is at the second
        engine.scheduled(state="canceled", not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        responder.released.set()
        engine.settle()
        writes = responder.writes_for(EVENT_ID)
        assert writes == ["cordon", "label", "evict", "uncordon"]
        record = engine.record(EVENT_ID)
        assert record.phase == "cancelled" and not record.cordoned
        assert record.outcome == ("scheduled event is now canceled; stopped after 1 of 3 pods had gone; "
                                  "node uncordoned")
        assert ("agent-state", "drained") not in responder.calls
        assert responder.calls[-1] == ("agent-state", "watching")
        # Reported once, when the drain had stopped, with how far it got.
        assert [r.outcome for r in engine.reporter.cancels] == [
            "scheduled event is now canceled; stopped after 1 of 3 pods had gone"]


def test_an_uncordon_the_api_refused_is_tried_again_while_the_agent_runs():
    """Without the retry the node stayed cordoned until the agent restarted, and the record was
    never forgotten."""
    responder = FakeResponder(pods=1, undo_failures=2)
    with Engine(responder, ON_SCHEDULED_EVENT="drain") as engine:
        engine.scheduled(not_before=engine.clock.now() + timedelta(days=2))
        engine.tick()
        engine.scheduled(state="canceled", not_before=engine.clock.now() + timedelta(days=2))
        engine.tick()
        assert responder.writes_for(EVENT_ID)[-1] == "uncordon failed"
        assert engine.record(EVENT_ID).uncordon_pending and engine.record(EVENT_ID).cordoned
        for _ in range(int(decide.UNCORDON_RETRY_S) - 2):
            engine.tick()
        assert responder.writes_for(EVENT_ID).count("uncordon failed") == 1
        for _ in range(int(decide.UNCORDON_RETRY_S) * 2 + 2):
            engine.tick()
        assert responder.writes_for(EVENT_ID)[-3:] == ["uncordon failed", "uncordon failed", "uncordon"]
        record = engine.record(EVENT_ID)
        assert not record.uncordon_pending and not record.cordoned
        assert record.outcome.endswith("; node uncordoned")
        assert engine.reporter.steps.count((EVENT_ID, "Uncordoned")) == 1


def test_a_cancel_of_a_response_still_waiting_for_kubernetes_is_reported_at_once():
    class NeverReady(FakeResponder):
        def startup(self, identity):
            return "waiting for /var/lib/kubelet/kubeconfig"

    engine = Engine(NeverReady(), ON_SCHEDULED_EVENT="drain")
    assert engine.agent.start()
    try:
        engine.wait(lambda: engine.agent.worker.startup_failures > 0)  # no longer holding notices
        engine.scheduled(not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        assert engine.record(EVENT_ID).phase == "seen"
        engine.scheduled(state="canceled", not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        assert [r.id for r in engine.reporter.cancels] == [EVENT_ID]
        assert engine.record(EVENT_ID).phase == "cancelled"
        assert not engine.responder.calls
    finally:
        engine.agent.shutdown()


def test_a_two_day_scheduled_event_in_fake_time():
    """Drained at once, then two days of polls every 30 s until it completes, then uncordoned."""
    with Engine(ON_SCHEDULED_EVENT="drain") as engine:
        start = engine.clock.now()
        engine.scheduled(not_before=start + timedelta(days=2), not_after=start + timedelta(days=2, hours=2))
        engine.tick()
        assert engine.record(EVENT_ID).phase == "done"
        for _ in range(2 * 24 * 120):
            engine.tick(30.0, settle=False)
        assert engine.clock.now() - start >= timedelta(days=2)
        assert engine.responder.writes_for(EVENT_ID) == ["cordon", "label", "evict", "evict", "evict"]
        engine.scheduled(state="completed", not_before=start + timedelta(days=2))
        engine.tick()
        assert engine.responder.writes_for(EVENT_ID)[-1] == "uncordon"
        record = engine.record(EVENT_ID)
        assert record.phase == "done" and record.outcome.startswith("undone: scheduled event completed")


def test_a_spot_notice_supersedes_a_running_scheduled_drain():
    responder = FakeResponder(pods=3, hold_at=1)
    with Engine(responder, ON_SCHEDULED_EVENT="drain") as engine:
        engine.scheduled(not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        assert responder.holding.wait(5)
        spot_time = engine.clock.now() + timedelta(seconds=120)
        engine.imds.bodies[SPOT] = json.dumps({"action": "terminate", "time": iso(spot_time)})
        engine.tick(settle=False)
        responder.released.set()
        engine.settle()
        spot_id = next(k for k in engine.agent.store.records() if k.startswith("spot-itn-"))
        scheduled = engine.record(EVENT_ID)
        assert scheduled.phase == "superseded" and scheduled.superseded_by == spot_id
        assert scheduled.outcome == f"superseded by {spot_id}; stopped after 1 of 3 pods had gone"
        assert responder.writes_for(EVENT_ID) == ["cordon", "label", "evict"]  # nothing after the supersede
        assert engine.record(spot_id).phase == "done"
        assert "uncordon" not in [what for what, _ in responder.calls]


def test_a_flapping_rebalance_keeps_the_cordon():
    with Engine() as engine:
        engine.imds.bodies[REBALANCE] = json.dumps({"noticeTime": iso(engine.clock.now())})
        engine.tick()
        rid = next(iter(engine.agent.store.records()))
        assert engine.record(rid).cordoned
        for _ in range(3):  # gone for one poll, back, gone for one poll, back
            body = engine.imds.bodies.pop(REBALANCE)
            engine.tick()
            engine.imds.bodies[REBALANCE] = body
            engine.tick()
        assert "uncordon" not in engine.responder.writes_for(rid)
        del engine.imds.bodies[REBALANCE]
        for _ in range(6):
            engine.tick()
        assert engine.responder.writes_for(rid)[-1] == "uncordon"
        assert engine.record(rid).phase == "cancelled"


def test_restart_resumes_an_open_response_and_never_repeats_a_finished_one():
    open_record = NoticeRecord(id="spot-itn-open", kind="spot-itn", action="terminate", first_seen=iso(FakeClock().now()),
                               deadline=iso(FakeClock().now() + timedelta(seconds=60)), response="drain",
                               phase="acting", cordoned=True, labelled=True, evicted=1, total=3)
    done_record = NoticeRecord(id="spot-itn-done", kind="spot-itn", action="terminate", first_seen=iso(FakeClock().now()),
                               deadline=iso(FakeClock().now() + timedelta(seconds=60)), response="drain", phase="done",
                               cordoned=True)
    state = AgentState(notices={"spot-itn-open": open_record, "spot-itn-done": done_record})
    with Engine(state=state) as engine:
        engine.settle()
        assert engine.responder.writes_for("spot-itn-open") == ["evict", "evict"]  # the two left
        assert engine.responder.writes_for("spot-itn-done") == []
        assert engine.record("spot-itn-open").phase == "done"


def test_a_plan_held_until_kubernetes_is_ready_expires_rather_than_act_late():
    class SlowStart(FakeResponder):
        attempts = 0

        def startup(self, identity):
            self.attempts += 1
            return None if self.attempts > 3 else "waiting for /var/lib/kubelet/kubeconfig"

    responder = SlowStart()
    engine = Engine(responder)
    engine.clock.advance(0)
    engine.imds.bodies[SPOT] = json.dumps({"action": "terminate", "time": iso(engine.clock.now() + timedelta(seconds=10))})
    assert engine.agent.start()
    try:
        engine.agent.tick()  # accepted while Kubernetes is not ready: held
        engine.wait(lambda: engine.agent.worker.ready)  # the worker's waits jump the fake clock 1+2+4 s
        engine.clock.advance(10)
        engine.settle()
        spot_id = next(iter(engine.agent.store.records()))
        record = engine.record(spot_id)
        assert record.phase == "expired" and responder.writes_for(spot_id) == []
    finally:
        engine.agent.shutdown()


@pytest.mark.parametrize("action", ["stop", "hibernate"])
def test_a_spot_stop_is_uncordoned_on_the_next_boot(action):
    clock = FakeClock()
    record = NoticeRecord(id="spot-itn-x", kind="spot-itn", action=action, first_seen=iso(clock.now()),
                          deadline=iso(clock.now() - timedelta(hours=1)), response="drain", phase="done",
                          cordoned=True, handled_at=(clock.now() - timedelta(hours=1)).timestamp())
    with Engine(state=AgentState(notices={"spot-itn-x": record}),
                boot_time=(clock.now() - timedelta(minutes=5)).timestamp()) as engine:
        engine.settle()
        assert engine.responder.writes_for("spot-itn-x") == ["uncordon"]
        assert not engine.record("spot-itn-x").cordoned


# --- per-path pacing ---------------------------------------------------------------------------


def gets_per_path(engine: Engine, ticks: int, step_s: float = 1.0) -> dict:
    before = len(engine.imds.gets)
    for _ in range(ticks):
        engine.tick(step_s, settle=False)
    counts: dict = {}
    for path in engine.imds.gets[before:]:
        counts[path] = counts.get(path, 0) + 1
    return counts


def test_each_path_is_polled_at_its_own_pace():
    """Defaults: spot and ASG every POLL_INTERVAL, rebalance every 5 s, scheduled every 30 s."""
    with Engine(POLL_INTERVAL_REBALANCE="5s", POLL_INTERVAL_SCHEDULED="30s") as engine:
        counts = gets_per_path(engine, 60)
        assert counts == {SPOT: 60, "autoscaling/target-lifecycle-state": 60, REBALANCE: 12, SCHEDULED: 2}


def test_a_sub_second_poll_with_the_asg_path_at_its_own_pace():
    with Engine(POLL_INTERVAL="250ms", POLL_INTERVAL_ASG="1s", POLL_INTERVAL_REBALANCE="5s",
                POLL_INTERVAL_SCHEDULED="30s") as engine:
        counts = gets_per_path(engine, 240, step_s=0.25)
        assert counts == {SPOT: 240, "autoscaling/target-lifecycle-state": 60, REBALANCE: 12, SCHEDULED: 2}


def test_a_path_whose_notice_is_being_answered_is_polled_fast_until_the_response_ends():
    responder = FakeResponder(pods=3, hold_at=1)
    with Engine(responder, ON_SCHEDULED_EVENT="drain", POLL_INTERVAL_SCHEDULED="30s") as engine:
        engine.scheduled(not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        assert responder.holding.wait(5)  # the drain is under way, held at its second pod
        assert gets_per_path(engine, 10)[SCHEDULED] == 10, "a response in progress: polled every second"
        engine.scheduled(state="canceled", not_before=engine.clock.now() + timedelta(days=2))
        engine.tick(settle=False)
        assert engine.record(EVENT_ID).phase == "cancelled", "the cancel is seen within one fast interval"
        responder.released.set()
        engine.settle()
        counts = gets_per_path(engine, 60)
        assert counts[SCHEDULED] == 2, "back to its own pace once the response has ended"


def test_records_the_agent_forgets_are_forgotten_by_its_reporters_too():
    # Reporters keep things per notice (Events to aggregate onto, metrics counted once): they
    # are told which notices the agent no longer keeps, so what they keep stays bounded too.
    seen = FakeClock().now() - timedelta(hours=1)
    closed = {
        f"rebalance-{i:03d}": NoticeRecord(
            id=f"rebalance-{i:03d}", kind="rebalance", action="rebalance", deadline=iso(seen),
            first_seen=iso(seen + timedelta(minutes=i)), response="cordon", phase="cancelled",
            outcome="notice withdrawn from IMDS; node uncordoned")
        for i in range(23)
    }
    with Engine(state=AgentState(notices=closed)) as engine:
        engine.tick()
        told = engine.reporter.forgotten_ids
        assert told == ["rebalance-000", "rebalance-001", "rebalance-002"]  # the oldest beyond those kept
        assert set(engine.agent.store.records()) == set(closed) - set(told)
        engine.tick()
        assert len(told) == 3  # told once
