"""The worker thread on its own: it runs jobs in the core's order and reports what happened
(started, ended and why, with its progress); it never decides a record's phase. Fake clock, fake
responder (tests.fakes), state in memory; the one real thread is the worker's."""
from __future__ import annotations

import threading
from datetime import timedelta
from typing import List

import pytest

from nodeagent import config, decide, decide_terms
from nodeagent.clock import iso
from nodeagent.decide_terms import Ending, KubernetesReady, ResponseEnded, ResponseStarted, UncordonDone, UncordonJob
from nodeagent.notice_store import NoticeStore
from nodeagent.respond import ResponseWorker
from nodeagent.state import SEEN, AgentState, NoticeRecord
from tests.fakes import T0, FakeClock, FakeResponder, MemoryFiles
from tests.helpers import wait_for

SETTINGS = config.load_settings([], {}, {})


class Setup:
    def __init__(self, responder: FakeResponder, *records: NoticeRecord, held: bool = False):
        self.clock = FakeClock()
        files = MemoryFiles(AgentState(notices={r.id: r for r in records}))
        self.store = NoticeStore(files)  # type: ignore[arg-type]
        self.store.load(files.state)  # type: ignore[arg-type]
        self.responder = responder
        self.reports: List[object] = []
        self.stop = threading.Event()
        self.worker = ResponseWorker(self.store, responder, clock=self.clock, reporters=lambda: [],  # type: ignore[arg-type]
                             stop=self.stop, on_status=lambda text: None, report=self.reports.append)
        self.worker.start(None, held=held)
        wait(lambda: self.worker.ready)

    def close(self) -> None:
        self.stop.set()
        self.responder.released.set()
        self.worker.join(2)

    def ended(self) -> List[ResponseEnded]:
        return [r for r in self.reports if isinstance(r, ResponseEnded)]


def wait(condition) -> None:
    wait_for(condition, 5.0, interval_s=0.001, message="the worker did not get there")


def notice(notice_id: str, deadline_in_s: float = 3600, response: str = "drain") -> NoticeRecord:
    return NoticeRecord(id=notice_id, kind="scheduled", action="system-reboot",
                        deadline=iso(T0 + timedelta(seconds=deadline_in_s)), first_seen=iso(T0), response=response)


def plan(record: NoticeRecord) -> decide_terms.Plan:
    return decide.plan_for(record, SETTINGS)


@pytest.fixture
def made():
    setups: List[Setup] = []

    def make(responder: FakeResponder, *records: NoticeRecord, held: bool = False) -> Setup:
        setups.append(Setup(responder, *records, held=held))
        return setups[-1]

    yield make
    for setup in setups:
        setup.close()


def test_ready_reports_the_nodes_spot_label_as_found(made):
    setup = made(FakeResponder())
    assert setup.reports == [KubernetesReady(spot_label=True)]


def test_a_response_reports_its_start_and_its_end_with_what_it_did_and_leaves_the_phase_alone(made):
    record = notice("a")
    setup = made(FakeResponder(pods=3), record)
    setup.worker.submit(plan(record))
    wait(lambda: setup.worker.idle)
    [started] = [r for r in setup.reports if isinstance(r, ResponseStarted)]
    [ended] = setup.ended()
    assert started.notice_id == "a" and ended.ending == Ending.FINISHED
    assert ended.progress is not None and ended.progress.evicted == 3 and ended.progress.drain_finished
    assert ended.progress.outcome == "drained: 3 evicted"
    stored = setup.store.get("a")
    assert stored.phase == SEEN and stored.outcome == ""  # the loop closes it, from the report
    assert stored.evicted == 3  # checkpoints are saved as the drain goes
    assert setup.store.agent_state == "drained"


def test_a_queued_response_that_is_cancelled_is_dropped_without_a_write(made):
    record, later = notice("a"), notice("b")
    setup = made(FakeResponder(), record, later, held=True)
    setup.worker.submit(plan(record))
    setup.worker.cancel("a", "withdrawn")
    assert setup.worker.idle
    [ended] = setup.ended()
    assert (ended.ending, ended.progress) == (Ending.DROPPED, None)
    setup.worker.release()
    setup.worker.submit(plan(later))  # jobs run in order: once b has run, a would have
    wait(lambda: setup.responder.writes_for("b") and setup.worker.idle)
    assert not setup.responder.writes_for("a")


def test_a_running_response_that_is_cancelled_stops_and_says_how_far_it_got(made):
    record = notice("a")
    responder = FakeResponder(pods=3, hold_at=1)
    setup = made(responder, record)
    setup.worker.submit(plan(record))
    assert responder.holding.wait(5)
    setup.worker.cancel("a", "withdrawn")
    responder.released.set()
    wait(lambda: setup.worker.idle)
    [ended] = setup.ended()
    assert ended.ending == Ending.STOPPED and ended.progress is not None and ended.progress.evicted == 1
    assert responder.writes_for("a") == ["cordon", "label", "evict"]


def test_a_response_whose_deadline_passed_before_it_could_start_is_not_started(made):
    record = notice("a", deadline_in_s=-1)
    setup = made(FakeResponder(), record)
    setup.worker.submit(plan(record))
    wait(lambda: setup.worker.idle)
    [ended] = setup.ended()
    assert ended.ending == Ending.LATE and not setup.responder.writes_for("a")
    assert not [r for r in setup.reports if isinstance(r, ResponseStarted)]


def test_a_stop_mid_drain_is_reported_as_interrupted(made):
    record = notice("a")
    responder = FakeResponder(pods=3, hold_at=1)
    setup = made(responder, record)
    setup.worker.submit(plan(record))
    assert responder.holding.wait(5)
    setup.stop.set()
    responder.released.set()
    wait(lambda: bool(setup.ended()))
    [ended] = setup.ended()
    assert ended.ending == Ending.INTERRUPTED and ended.progress is not None and ended.progress.evicted == 1


def test_jobs_run_in_the_cores_order_uncordons_first_then_the_most_urgent(made):
    later, sooner = notice("later", deadline_in_s=7200, response="cordon"), notice("sooner", 3600, "cordon")
    setup = made(FakeResponder(), later, sooner, notice("old"), held=True)
    setup.worker.submit(plan(later))
    setup.worker.submit(plan(sooner))
    setup.worker.submit(UncordonJob("old", "withdrawn"))
    setup.worker.release()
    wait(lambda: setup.worker.idle)
    firsts = [who for what, who in setup.responder.calls if what in ("uncordon", "cordon")]
    assert firsts == ["old", "sooner", "later"]
    assert UncordonDone("old", "withdrawn") in setup.reports


def test_an_uncordon_that_fails_reports_nothing_and_stays_pending(made):
    class Failing(FakeResponder):
        def undo(self, record, reason):
            raise RuntimeError("API down")

    setup = made(Failing(), notice("old"))
    setup.worker.submit(UncordonJob("old", "withdrawn"))
    wait(lambda: setup.worker.idle)
    assert not [r for r in setup.reports if isinstance(r, UncordonDone)]
