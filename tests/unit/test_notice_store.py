"""The notice store's named verbs: what each may change, what it refuses, and that every change
is saved. State kept in memory (tests.fakes.MemoryFiles); no threads, no sockets."""
from __future__ import annotations

from dataclasses import replace

import pytest

from nodeagent.clock import iso
from nodeagent.notice_store import NoticeStore, UnknownNotice, working_copy
from nodeagent.state import ACTING, CANCELLED, DONE, EXPIRED, SEEN, SUPERSEDED, AgentState, NoticeRecord
from tests.fakes import T0, MemoryFiles


def make_store(*records: NoticeRecord):
    files = MemoryFiles(AgentState(notices={r.id: r for r in records}))
    store = NoticeStore(files)  # type: ignore[arg-type]
    store.load(files.state)  # type: ignore[arg-type]
    return store, files


def notice(notice_id: str = "n", phase: str = SEEN, **fields) -> NoticeRecord:
    return NoticeRecord(id=notice_id, kind="scheduled", action="system-reboot", deadline=iso(T0),
                        first_seen=iso(T0), response="drain", phase=phase, **fields)


def test_readers_get_copies_and_every_change_is_saved():
    store, files = make_store()
    store.accept(notice())
    saves = files.saves
    copy = store.get("n")
    copy.phase, copy.left = DONE, ["x"]
    store.records()["n"].outcome = "changed"
    assert store.get("n").phase == SEEN and store.get("n").left == [] and store.get("n").outcome == ""
    assert store.snapshot().last_notice == "n"
    assert store.start("n") and files.saves == saves + 1
    assert files.state.notices["n"].phase == ACTING  # type: ignore[union-attr]


def test_an_unknown_notice_is_an_error():
    store, _ = make_store()
    with pytest.raises(UnknownNotice):
        store.get("nope")
    with pytest.raises(UnknownNotice):
        store.cancel("nope", "why")


def test_start_only_opens_what_is_open():
    store, _ = make_store(notice("a"), notice("b", phase=CANCELLED))
    assert store.start("a") and store.get("a").phase == ACTING
    assert not store.start("b") and store.get("b").phase == CANCELLED


def test_a_checkpoint_saves_progress_but_never_a_phase_or_an_outcome():
    store, _ = make_store(notice(phase=CANCELLED, outcome="withdrawn"))
    working = working_copy(store.get("n"))
    working.cordoned, working.evicted, working.left = True, 2, ["default/web-0"]
    working.phase, working.outcome = DONE, "drained"
    store.checkpoint(working)
    record = store.get("n")
    assert (record.cordoned, record.evicted, record.left) == (True, 2, ["default/web-0"])
    assert (record.phase, record.outcome) == (CANCELLED, "withdrawn")


def test_progress_then_done_records_the_outcome_and_when():
    store, _ = make_store(notice(phase=ACTING))
    store.progress(replace(notice(phase=ACTING), evicted=3, drain_finished="t", outcome="drained: 3 evicted"))
    final = store.mark_done("n", "drained: 3 evicted", 123.0)
    assert (final.phase, final.evicted, final.outcome, final.handled_at) == (DONE, 3, "drained: 3 evicted", 123.0)


def test_supersede_and_reopen_only_from_the_right_phase():
    store, _ = make_store(notice("a", phase=ACTING), notice("b", phase=DONE))
    assert not store.reopen("a")
    assert store.supersede("a", "spot-itn-1")
    record = store.get("a")
    assert (record.phase, record.superseded_by, record.outcome) == (SUPERSEDED, "spot-itn-1", "superseded by spot-itn-1")
    assert not store.supersede("b", "spot-itn-1") and store.get("b").phase == DONE
    assert store.reopen("a")
    record = store.get("a")
    assert (record.phase, record.superseded_by) == (SEEN, None)
    assert record.outcome == "resumed: spot-itn-1 was cancelled"


@pytest.mark.parametrize("evicted, total, said", [(1, 3, "stopped after 1 of 3 pods had gone"),
                                                  (0, 0, "stopped after no pod had been evicted")])
def test_a_stopped_response_says_truthfully_how_far_it_got(evicted, total, said):
    store, _ = make_store(notice(phase=ACTING))
    store.cancel("n", "scheduled event is now canceled")
    progress = replace(notice(phase=ACTING), cordoned=True, evicted=evicted, total=total, outcome="ignored")
    final = store.stopped_early("n", progress)
    assert final.phase == CANCELLED and final.cordoned and final.evicted == evicted
    assert final.outcome == f"scheduled event is now canceled; {said}"


def test_expire_and_interrupted():
    store, _ = make_store(notice("a"), notice("b", phase=ACTING))
    store.expire("a", "deadline passed while the agent was not running")
    assert (store.get("a").phase, store.get("a").outcome) == (EXPIRED, "deadline passed while the agent was not running")
    store.interrupted(replace(notice("b", phase=DONE), evicted=1, outcome="drain interrupted"))
    assert (store.get("b").phase, store.get("b").evicted) == (ACTING, 1)  # stays open for the next start


def test_uncordon_requested_then_done_or_only_released():
    store, _ = make_store(notice("a", phase=CANCELLED, cordoned=True, labelled=True, outcome="withdrawn"),
                          notice("b", phase=DONE, cordoned=True))
    store.request_uncordon("a")
    assert store.get("a").uncordon_pending
    store.uncordoned("a", "withdrawn", done=True)
    record = store.get("a")
    assert not (record.uncordon_pending or record.cordoned or record.labelled)
    assert record.outcome == "withdrawn; node uncordoned"
    store.uncordoned("b", "scheduled event completed", done=False)  # another notice keeps the cordon
    assert not store.get("b").cordoned and store.get("b").outcome == ""
    store.uncordoned("b", "scheduled event completed", done=True)
    assert store.get("b").outcome == "undone: scheduled event completed"


def test_only_lifecycle_fields_come_from_the_lifecycle_hook():
    store, _ = make_store(notice())
    assert store.lifecycle("n", lifecycle_heartbeats=2).lifecycle_heartbeats == 2
    with pytest.raises(ValueError):
        store.lifecycle("n", phase=DONE)
    assert store.get("n").phase == SEEN


def test_forget_drops_closed_records_in_one_save_and_refuses_open_ones():
    store, files = make_store(notice("a", phase=DONE), notice("b", phase=CANCELLED), notice("c", phase=ACTING))
    saves = files.saves
    store.forget(["a", "b"])
    assert set(store.records()) == {"c"} and files.saves == saves + 1
    with pytest.raises(ValueError):
        store.forget(["c"])
    assert set(store.records()) == {"c"}


def test_agent_fields_are_saved_only_when_they_change():
    store, files = make_store()
    saves = files.saves
    assert store.set_agent_state("draining") and not store.set_agent_state("draining")
    store.set_status("watching")
    store.set_status("watching")
    assert files.saves == saves + 2
    store.set_drain_progress({"gone": 1})  # rides on the next save
    assert files.saves == saves + 2 and store.snapshot().drain_progress == {"gone": 1}
