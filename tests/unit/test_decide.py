"""The decision core, pure: rules for what a notice means and how a response starts, changes
course and ends. A fake `now`, no sockets, no threads."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone
import random
from typing import Dict, Optional

import pytest

from nodeagent import config, decide, decide_terms
from nodeagent.clock import iso
from nodeagent.decide_terms import (Absence, Accept, Cancel, Context, Expire, PollResult, Reopen, Resume, Say,
                                    Supersede, Uncordon, UncordonFailed)
from nodeagent.kube.pod_rules import NEAR_S, retry_delay
from nodeagent.notices import SOURCES_BY_KIND, Notice
from nodeagent.state import ACTING, CANCELLED, DONE, SEEN, SUPERSEDED, NoticeRecord
from tests.fakes import T0

UTC = timezone.utc


def settings(**keys: str) -> config.Settings:
    return config.load_settings([], {}, keys)


def ctx(now: datetime = T0, **kw) -> Context:
    return Context(now=now, spot_label=True, imds_life_cycle="spot", **kw)


def gmt(moment: datetime) -> str:
    return moment.strftime("%d %b %Y %H:%M:%S GMT")


def scheduled(event_id: str = "instance-event-0aaaaaaaaaaaaaaaa", *, not_before: datetime, state: str = "active",
              code: str = "instance-retirement", not_after: Optional[datetime] = None) -> dict:
    event = {"NotBefore": gmt(not_before), "Code": code, "EventId": event_id, "State": state}
    if not_after is not None:
        event["NotAfter"] = gmt(not_after)
    return event


def poll(now: datetime, *, spot: Optional[dict] = None, rebalance: Optional[dict] = None,
         events: Optional[list] = None, asg: Optional[str] = None,
         answered=("spot-itn", "asg", "rebalance", "scheduled")) -> PollResult:
    """What poll_once would make of these bodies (parsed by the real parsers)."""
    bodies = {"spot-itn": json.dumps(spot) if spot else None,
              "rebalance": json.dumps(rebalance) if rebalance else None,
              "scheduled": json.dumps(events if events is not None else []), "asg": asg or "InService"}
    found: Dict[str, Notice] = {}
    problems = []
    for kind in answered:
        if bodies[kind] is None:
            continue
        parsed = SOURCES_BY_KIND[kind].parse(bodies[kind], now)
        problems.extend(parsed.problems)
        found.update({n.id: n for n in parsed.notices})
    return PollResult(found, frozenset(answered), {}, tuple(problems))


def record(notice_id: str, kind: str, *, deadline: datetime, phase: str = SEEN, response: str = "drain",
           action: str = "terminate", cordoned: bool = False, **kw) -> NoticeRecord:
    return NoticeRecord(id=notice_id, kind=kind, action=action, deadline=iso(deadline), first_seen=iso(T0),
                        response=response, phase=phase, cordoned=cordoned, **kw)


def of(actions, kind):
    return [a for a in actions if isinstance(a, kind)]


# --- deadlines ---------------------------------------------------------------------------------


def test_spot_deadline_is_the_notice_time():
    d = decide.decide_poll({}, poll(T0, spot={"action": "terminate", "time": iso(T0 + timedelta(seconds=120))}),
                           {}, settings(), ctx())
    [accept] = of(d.actions, Accept)
    assert accept.plan.deadline == T0 + timedelta(seconds=120)
    assert accept.plan.force_at_deadline


def test_spot_time_already_past_gets_the_margin_floor_and_zero_grace():
    d = decide.decide_poll({}, poll(T0, spot={"action": "terminate", "time": iso(T0 - timedelta(seconds=30))}),
                           {}, settings(DRAIN_MARGIN="15s"), ctx())
    [accept] = of(d.actions, Accept)
    assert accept.plan.deadline == T0 + timedelta(seconds=15)  # pods_gone_by = now: grace 0
    assert "zero grace" in accept.message


def test_open_maintenance_window_runs_to_not_after_not_to_the_margin():
    """A scheduled event whose NotBefore has passed (its window is open) is drained by its NotAfter,
    not by now + DRAIN_MARGIN (which would give every pod a grace of 0 and delete PDB-blocked pods
    at once)."""
    events = [scheduled(not_before=T0 - timedelta(hours=1), not_after=T0 + timedelta(days=2))]
    d = decide.decide_poll({}, poll(T0, events=events), {}, settings(), ctx())
    [accept] = of(d.actions, Accept)
    assert accept.plan.deadline == T0 + timedelta(days=2)
    assert accept.record.not_after == iso(T0 + timedelta(days=2))
    assert "window open: NotAfter" in accept.message


@pytest.mark.parametrize("not_after", [None, T0 - timedelta(minutes=5), T0 + timedelta(seconds=5)])
def test_open_window_without_a_usable_not_after_uses_drain_window(not_after):
    events = [scheduled(not_before=T0 - timedelta(hours=1), not_after=not_after)]
    d = decide.decide_poll({}, poll(T0, events=events), {}, settings(DRAIN_WINDOW="10m"), ctx())
    [accept] = of(d.actions, Accept)
    assert accept.plan.deadline == T0 + timedelta(minutes=10)


def test_future_scheduled_event_deadline_is_not_before():
    events = [scheduled(not_before=T0 + timedelta(days=2), not_after=T0 + timedelta(days=3))]
    d = decide.decide_poll({}, poll(T0, events=events), {}, settings(), ctx())
    assert of(d.actions, Accept)[0].plan.deadline == T0 + timedelta(days=2)


@pytest.mark.parametrize("kind, body", [("rebalance", {"noticeTime": "2026-12-01T11:00:00Z"}), ("asg", "Terminated")])
def test_notices_without_a_time_of_their_own_get_drain_window(kind, body):
    p = poll(T0, rebalance=body) if kind == "rebalance" else poll(T0, asg=body)
    d = decide.decide_poll({}, p, {}, settings(DRAIN_WINDOW="90s", ON_REBALANCE="drain"), ctx())
    assert of(d.actions, Accept)[0].plan.deadline == T0 + timedelta(seconds=90)


# --- per-event tolerance, odd values -----------------------------------------------------------


def test_one_odd_scheduled_entry_does_not_hide_a_valid_reboot():
    """An entry with an unknown Code or no State beside a valid active system-reboot does not make
    the whole list invalid: the reboot is acted on."""
    good = scheduled("instance-event-0bbbbbbbbbbbbbbbb", not_before=T0 + timedelta(hours=5), code="system-reboot")
    no_state = {k: v for k, v in scheduled("instance-event-0ccc", not_before=T0).items() if k != "State"}
    odd_code = scheduled("instance-event-0ddd", not_before=T0 + timedelta(hours=6), code="system-explode")
    broken = {**scheduled("instance-event-0eee", not_before=T0), "NotBefore": "yesterday"}
    d = decide.decide_poll({}, poll(T0, events=[no_state, good, odd_code, broken]), {}, settings(), ctx())
    accepted = {a.record.id: a for a in of(d.actions, Accept)}
    assert set(accepted) == {"scheduled-instance-event-0bbbbbbbbbbbbbbbb", "scheduled-instance-event-0ddd",
                             "scheduled-instance-event-0ccc"}
    assert all(a.plan is not None and a.plan.response == "drain" for a in accepted.values())  # ON_SCHEDULED_EVENT
    says = [s.text for s in of(d.actions, Say)]
    assert any("'NotBefore'" in text and "entry skipped" in text for text in says)
    assert any("'system-explode'" in text for text in says)


def test_a_scheduled_event_without_a_state_is_acted_on_with_one_warning():
    no_state = {k: v for k, v in scheduled("instance-event-0ccc", not_before=T0 + timedelta(hours=1)).items()
                if k != "State"}
    d = decide.decide_poll({}, poll(T0, events=[no_state]), {}, settings(), ctx())
    [accept] = of(d.actions, Accept)
    assert accept.plan is not None and accept.record.phase == SEEN
    [say] = of(d.actions, Say)
    assert say.level == logging.WARNING and say.key == "note-scheduled-instance-event-0ccc"
    assert "no State; handled as active" in say.text


def test_unknown_spot_action_is_drained_as_terminate_and_said():
    """A spot action other than terminate/stop/hibernate is still a notice to drain for, not a poll
    error."""
    d = decide.decide_poll({}, poll(T0, spot={"action": "reboot", "time": iso(T0 + timedelta(seconds=120))}),
                           {}, settings(), ctx())
    [accept] = of(d.actions, Accept)
    assert accept.plan.response == "drain" and accept.record.action == "terminate"
    [say] = [s for s in of(d.actions, Say) if s.key.startswith("note-")]
    assert say.level == logging.WARNING and "handled as terminate" in say.text


@pytest.mark.parametrize("state, acted", [
    ("Terminated", True), ("Warmed:Terminated", True), ("Warmed:Stopped", True), ("Warmed:Hibernated", True),
    ("InService", False), ("Warmed:Running", False), ("Standby", False), ("Detached", False),
])
def test_warm_pool_states(state, acted):
    d = decide.decide_poll({}, poll(T0, asg=state), {}, settings(ON_ASG_TERMINATION="drain"), ctx())
    accepts = of(d.actions, Accept)
    assert bool(accepts) is acted
    if acted:
        assert accepts[0].plan.response == "drain" and accepts[0].record.action == state
    assert not of(d.actions, Say)


def test_unknown_asg_state_is_said_and_no_action():
    d = decide.decide_poll({}, poll(T0, asg="Warmed:Melted"), {}, settings(), ctx())
    assert not of(d.actions, Accept)
    [say] = of(d.actions, Say)
    assert "unknown lifecycle state 'Warmed:Melted'; no action" in say.text


# --- withdrawal debounce ----------------------------------------------------------------------


def test_one_empty_answer_does_not_undo_a_cordon():
    """A rebalance missing from a single poll is not yet withdrawn: the node stays cordoned."""
    records = {"rebalance-20261201T110000Z": record("rebalance-20261201T110000Z", "rebalance",
                                                    deadline=T0 + timedelta(minutes=2), phase=DONE,
                                                    response="cordon", action="rebalance", cordoned=True)}
    absences: Dict[str, Absence] = {}
    s = settings()  # 3 polls and 5 s
    now = T0
    for _ in range(2):
        d = decide.decide_poll(records, poll(now), absences, s, ctx(now))
        assert not of(d.actions, Cancel)
        absences = dict(d.absences)
        now += timedelta(seconds=1)
    # It is back: the count starts over.
    d = decide.decide_poll(records, poll(now, rebalance={"noticeTime": "2026-12-01T11:00:00Z"}), absences, s, ctx(now))
    assert d.absences == {} and not of(d.actions, Accept)
    absences = {}
    cancels = []
    for step in range(10):
        d = decide.decide_poll(records, poll(now), absences, s, ctx(now))
        absences = dict(d.absences)
        cancels = of(d.actions, Cancel)
        if cancels:
            break
        now += timedelta(seconds=1)
    # Third answered poll without it, but only 2 s: it needs 5 s too.
    assert step == 5 and cancels == [Cancel("rebalance-20261201T110000Z", "notice withdrawn from IMDS", undo=True)]


def test_polls_that_did_not_answer_do_not_count_towards_a_withdrawal():
    records = {"r": record("r", "rebalance", deadline=T0 + timedelta(minutes=2), phase=DONE, response="cordon",
                           cordoned=True)}
    absences: Dict[str, Absence] = {}
    now = T0
    for _ in range(20):
        d = decide.decide_poll(records, poll(now, answered=("spot-itn", "scheduled")), absences, settings(), ctx(now))
        absences = dict(d.absences)
        assert not of(d.actions, Cancel)
        now += timedelta(seconds=1)


def test_explicit_canceled_state_acts_at_once():
    event = scheduled(not_before=T0 + timedelta(days=2), state="canceled")
    rid = "scheduled-instance-event-0aaaaaaaaaaaaaaaa"
    records = {rid: record(rid, "scheduled", deadline=T0 + timedelta(days=2), phase=ACTING, cordoned=True)}
    d = decide.decide_poll(records, poll(T0, events=[event]), {}, settings(), ctx(running=rid))
    assert of(d.actions, Cancel) == [Cancel(rid, "scheduled event is now canceled", undo=True)]


def test_a_scheduled_event_gone_after_its_time_happened_and_is_not_cancelled():
    rid = "scheduled-x"
    records = {rid: record(rid, "scheduled", deadline=T0 - timedelta(minutes=1), phase=DONE, cordoned=True,
                           action="system-reboot")}
    absences: Dict[str, Absence] = {}
    actions = []
    for step in range(6):
        now = T0 + timedelta(seconds=2 * step)
        d = decide.decide_poll(records, poll(now), absences, settings(), ctx(now))
        absences = dict(d.absences)
        actions += list(d.actions)
    assert not of(actions, Cancel)
    assert of(actions, Uncordon) == [Uncordon(rid, "scheduled event no longer listed after its time", keep=False)]


# --- cancellation and holders -------------------------------------------------------------------


def test_cancel_keeps_the_cordon_while_a_spot_notice_holds_the_node():
    rid = "scheduled-x"
    records = {
        rid: record(rid, "scheduled", deadline=T0 + timedelta(days=1), phase=DONE, cordoned=True),
        "spot-itn-1": record("spot-itn-1", "spot-itn", deadline=T0 + timedelta(minutes=1), phase=ACTING),
    }
    event = scheduled("x", not_before=T0 + timedelta(days=1), state="canceled")
    d = decide.decide_poll(records, poll(T0, events=[event]), {}, settings(), ctx())
    assert of(d.actions, Cancel) == [Cancel(rid, "scheduled event is now canceled", undo=False)]


def test_an_uncordon_that_failed_is_decided_again_after_the_retry_interval():
    rid = "scheduled-x"
    pending = record(rid, "scheduled", deadline=T0 + timedelta(days=1), phase=CANCELLED, cordoned=True,
                     uncordon_pending=True)
    failed = {rid: UncordonFailed(rid, "scheduled event is now canceled", T0)}
    retry_s = decide.UNCORDON_RETRY_S

    def uncordons(records, now, failures=failed):
        return of(decide.decide_poll(records, poll(now), {}, settings(), ctx(now, failed_uncordons=failures)).actions,
                  Uncordon)

    assert uncordons({rid: pending}, T0 + timedelta(seconds=retry_s - 1)) == []
    assert uncordons({rid: pending}, T0 + timedelta(seconds=retry_s)) == [
        Uncordon(rid, "scheduled event is now canceled", keep=False)]
    # Not before it failed (in flight, or decided at a start), nor once it is no longer pending.
    assert uncordons({rid: pending}, T0 + timedelta(hours=1), failures={}) == []
    done = record(rid, "scheduled", deadline=T0 + timedelta(days=1), phase=CANCELLED)
    assert uncordons({rid: done}, T0 + timedelta(hours=1)) == []
    # A notice holding the node by then keeps the cordon: only the record lets go.
    spot = record("spot-itn-1", "spot-itn", deadline=T0 + timedelta(hours=2), phase=ACTING)
    assert uncordons({rid: pending, spot.id: spot}, T0 + timedelta(seconds=retry_s)) == [
        Uncordon(rid, "scheduled event is now canceled", keep=True, held_by="spot-itn-1")]


def test_cancel_of_a_cancelled_record_is_not_repeated_and_a_return_is_said_once():
    rid = "scheduled-instance-event-0aaaaaaaaaaaaaaaa"
    records = {rid: record(rid, "scheduled", deadline=T0 + timedelta(days=1), phase=CANCELLED)}
    d = decide.decide_poll(records, poll(T0, events=[scheduled(not_before=T0 + timedelta(days=1))]), {}, settings(), ctx())
    assert not of(d.actions, Cancel) and not of(d.actions, Accept)
    assert "is back (active) after it was cancelled" in of(d.actions, Say)[0].text


# --- supersede --------------------------------------------------------------------------------


def test_a_spot_notice_supersedes_a_running_scheduled_drain():
    rid = "scheduled-x"
    records = {rid: record(rid, "scheduled", deadline=T0 + timedelta(days=2), phase=ACTING, cordoned=True)}
    p = poll(T0, spot={"action": "terminate", "time": iso(T0 + timedelta(seconds=120))},
             events=[scheduled("x", not_before=T0 + timedelta(days=2))])
    d = decide.decide_poll(records, p, {}, settings(), ctx(running=rid))
    [accept] = of(d.actions, Accept)
    assert of(d.actions, Supersede) == [Supersede(rid, by=accept.record.id)]


def test_a_rebalance_cordon_does_not_supersede_a_drain():
    rid = "spot-itn-1"
    records = {rid: record(rid, "spot-itn", deadline=T0 + timedelta(minutes=2), phase=ACTING)}
    d = decide.decide_poll(records, poll(T0, rebalance={"noticeTime": "2026-12-01T11:00:00Z"}), {}, settings(),
                           ctx(running=rid))
    assert of(d.actions, Accept) and not of(d.actions, Supersede)


def test_a_later_drain_does_not_supersede_a_more_urgent_one():
    rid = "spot-itn-1"
    records = {rid: record(rid, "spot-itn", deadline=T0 + timedelta(minutes=2), phase=ACTING)}
    d = decide.decide_poll(records, poll(T0, events=[scheduled(not_before=T0 + timedelta(days=1))]), {}, settings(),
                           ctx(running=rid))
    assert of(d.actions, Accept) and not of(d.actions, Supersede)


def test_cancelling_the_superseding_notice_reopens_the_superseded_one():
    records = {
        "scheduled-a": record("scheduled-a", "scheduled", deadline=T0 + timedelta(days=2), phase=SUPERSEDED,
                              superseded_by="scheduled-b"),
        "scheduled-b": record("scheduled-b", "scheduled", deadline=T0 + timedelta(hours=1), phase=ACTING, cordoned=True),
    }
    events = [scheduled("a", not_before=T0 + timedelta(days=2)),
              scheduled("b", not_before=T0 + timedelta(hours=1), state="canceled")]
    d = decide.decide_poll(records, poll(T0, events=events), {}, settings(), ctx(running="scheduled-b"))
    assert of(d.actions, Cancel) == [Cancel("scheduled-b", "scheduled event is now canceled", undo=False)]
    [reopen] = of(d.actions, Reopen)
    assert reopen.plan.notice_id == "scheduled-a" and reopen.plan.resume


def test_a_superseded_notice_gone_from_imds_is_not_resumed_when_its_successor_is_cancelled():
    """E1 was replaced by E2 (E1 no longer listed), then E2 was cancelled: E1 must not come back."""
    records = {
        "scheduled-a": record("scheduled-a", "scheduled", deadline=T0 + timedelta(days=2), phase=SUPERSEDED,
                              superseded_by="scheduled-b", cordoned=True),
        "scheduled-b": record("scheduled-b", "scheduled", deadline=T0 + timedelta(hours=1), phase=ACTING, cordoned=True),
    }
    events = [scheduled("b", not_before=T0 + timedelta(hours=1), state="canceled")]
    d = decide.decide_poll(records, poll(T0, events=events), {}, settings(), ctx(running="scheduled-b"))
    assert not of(d.actions, Reopen)
    assert of(d.actions, Cancel) == [Cancel("scheduled-b", "scheduled event is now canceled", undo=True)]
    assert any("no longer in IMDS either; not resumed" in say.text for say in of(d.actions, Say))
    # Listed but no longer active: gone too. A path that did not answer says nothing: resumed.
    ended = [scheduled("a", not_before=T0 + timedelta(days=2), state="completed"), *events]
    assert not of(decide.decide_poll(records, poll(T0, events=ended), {}, settings(), ctx()).actions, Reopen)
    spot_only = poll(T0, answered=("spot-itn",))
    assert decide.still_listed(records["scheduled-a"], spot_only)


# --- gate --------------------------------------------------------------------------------------


def test_spot_gate_skips_a_rebalance_on_an_on_demand_node():
    d = decide.decide_poll({}, poll(T0, rebalance={"noticeTime": "2026-12-01T11:00:00Z"}), {}, settings(),
                           Context(now=T0, spot_label=False, imds_life_cycle="on-demand"))
    [accept] = of(d.actions, Accept)
    assert accept.plan is None and accept.record.phase == "skipped" and "SPOT_GATE" in accept.record.outcome


# --- starting: resume, expiry, after a reboot -----------------------------------------------------


def test_start_resumes_open_responses_and_expires_late_ones():
    records = {
        "a": record("a", "spot-itn", deadline=T0 + timedelta(seconds=30), phase=ACTING),
        "b": record("b", "spot-itn", deadline=T0 - timedelta(seconds=1), phase=ACTING),
        "c": record("c", "rebalance", deadline=T0 + timedelta(seconds=30), phase=DONE, response="cordon", cordoned=True),
    }
    actions = decide.decide_start(records, settings(), ctx())
    assert [a.plan.notice_id for a in of(actions, Resume)] == ["a"]
    assert of(actions, Expire) == [Expire("b", "deadline passed while the agent was not running")]
    assert not of(actions, Uncordon)


@pytest.mark.parametrize("kind, action", [("scheduled", "system-reboot"), ("scheduled", "instance-reboot"),
                                          ("spot-itn", "stop"), ("spot-itn", "hibernate"),
                                          ("asg", "Warmed:Stopped")])
def test_uncordon_on_the_first_start_after_the_instance_came_back(kind, action):
    handled = (T0 - timedelta(hours=1)).timestamp()
    records = {"n": record("n", kind, deadline=T0 - timedelta(hours=1), phase=DONE, cordoned=True, action=action,
                           handled_at=handled)}
    booted_after = ctx(boot_time=handled + 60)
    assert of(decide.decide_start(records, settings(), booted_after), Uncordon) == [
        Uncordon("n", f"rebooted after the {action}", keep=False)]
    same_boot = ctx(boot_time=handled - 60)
    assert not of(decide.decide_start(records, settings(), same_boot), Uncordon)
    assert not of(decide.decide_start(records, settings(UNCORDON_AFTER_REBOOT="false"), booted_after), Uncordon)


def test_a_spot_terminate_never_uncordons_after_a_boot():
    handled = (T0 - timedelta(hours=1)).timestamp()
    records = {"n": record("n", "spot-itn", deadline=T0, phase=DONE, cordoned=True, handled_at=handled)}
    assert not decide.decide_start(records, settings(), ctx(boot_time=handled + 60))


def test_adopting_a_drain_in_progress_from_the_node_resumes_it():
    found = decide_terms.NodeNotice(id="spot-itn-1", kind="spot-itn", deadline=iso(T0 + timedelta(seconds=60)),
                              action="terminate", agent="draining", cordoned=True)
    actions = decide.decide_adopt(found, {}, settings(), ctx())
    [accept] = of(actions, Accept)
    assert accept.record.phase == ACTING
    assert [r.plan.notice_id for r in of(actions, Resume)] == ["spot-itn-1"]
    finished = decide_terms.NodeNotice(**{**found.__dict__, "agent": "drained"})
    assert not of(decide.decide_adopt(finished, {}, settings(), ctx()), Resume)


def test_adopting_a_notice_already_seen_this_run_before_the_api_was_up():
    """A wiped state dir: IMDS served the notice again before the node could be read."""
    found = decide_terms.NodeNotice(id="spot-itn-1", kind="spot-itn", deadline=iso(T0 + timedelta(seconds=60)),
                              action="terminate", agent="draining", cordoned=True)
    seen = {"spot-itn-1": record("spot-itn-1", "spot-itn", deadline=T0 + timedelta(seconds=60), phase=SEEN)}
    actions = decide.decide_adopt(found, seen, settings(), ctx())
    assert not of(actions, Accept) and not of(actions, Resume), "its queued response resumes the drain"
    assert "in progress: resuming it" in of(actions, Say)[0].text
    finished = decide_terms.NodeNotice(**{**found.__dict__, "agent": "drained"})
    [accept] = of(decide.decide_adopt(finished, seen, settings(), ctx()), Accept)
    assert accept.record.phase == DONE and accept.plan is None, "a finished drain is not repeated"
    acting = {"spot-itn-1": record("spot-itn-1", "spot-itn", deadline=T0 + timedelta(seconds=60), phase=ACTING,
                                   cordoned=True)}
    assert decide.decide_adopt(finished, acting, settings(), ctx()) == ()


# --- retry pacing ------------------------------------------------------------------------------


def count_retries(horizon_s: float, seed: int = 1) -> int:
    """Requests for one PDB-blocked pod from the drain's start to its last safe moment."""
    rng = random.Random(seed)
    now, last_safe, backoff, requests = T0, T0 + timedelta(seconds=horizon_s), 0.1, 1
    while True:
        delay = retry_delay(backoff, now, last_safe, rng)
        if delay <= 0:
            return requests
        now += timedelta(seconds=delay)
        requests += 1
        backoff = min(1.0, backoff * 2)
        if now >= last_safe:
            return requests


def test_retries_slow_down_to_about_one_a_minute_when_the_deadline_is_far():
    two_days = 2 * 86400
    far_s = two_days - NEAR_S
    near = count_retries(NEAR_S)
    far = count_retries(two_days) - near
    assert far <= far_s / 60 + 5, "at most about one try a minute while far"
    assert near <= NEAR_S / 0.5 + 1, "about one a second in the last ten minutes"


def test_retries_stay_about_once_a_second_within_ten_minutes_of_the_last_safe_moment():
    rng = random.Random(2)
    for left_s in (8, 30, 120, 599):
        delays = [retry_delay(1.0, T0, T0 + timedelta(seconds=left_s), rng) for _ in range(100)]
        assert all(0.5 <= delay <= 1.0 for delay in delays)
        assert max(delays) - min(delays) > 0.2, "jittered, so a fleet's retries spread"
    far = [retry_delay(1.0, T0, T0 + timedelta(days=1), rng) for _ in range(100)]
    assert all(60.0 <= delay <= 72.0 for delay in far)
    assert retry_delay(1.0, T0, T0 + timedelta(seconds=0.4), rng) <= 0.4  # never past it
    assert retry_delay(1.0, T0, T0 - timedelta(seconds=1), rng) == 0.0
    # A 2-minute spot notice: retried about once a second all the way (a late PDB is honoured).
    assert count_retries(90) > 90


# --- per-kind policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind, response", [("spot-itn", "drain"), ("rebalance", "cordon"), ("scheduled", "drain"),
                                            ("asg", "drain")])
def test_each_kind_has_its_configured_response(kind, response):
    assert decide.response_for(settings(), kind) == response
    assert decide.response_for(settings(ON_REBALANCE="ignore"), "rebalance") == "ignore"


def test_force_at_deadline_auto_spares_a_rebalance_only():
    assert [decide.force_at_deadline(settings(), k) for k in ("spot-itn", "rebalance", "scheduled", "asg")] == [
        True, False, True, True]
    assert decide.force_at_deadline(settings(FORCE_AT_DEADLINE="true"), "rebalance")
    assert not decide.force_at_deadline(settings(FORCE_AT_DEADLINE="false"), "spot-itn")


def test_the_load_balancer_label_is_for_drains_only():
    assert decide.exclude_from_lb(settings(), "spot-itn", "drain")
    assert not decide.exclude_from_lb(settings(), "scheduled", "drain")  # auto: spot interruptions
    assert decide.exclude_from_lb(settings(EXCLUDE_FROM_LB="true"), "scheduled", "drain")
    assert not decide.exclude_from_lb(settings(EXCLUDE_FROM_LB="true"), "rebalance", "cordon")
    assert not decide.exclude_from_lb(settings(ON_SPOT_INTERRUPTION="cordon"), "spot-itn", "cordon")
    cordon = record("r", "spot-itn", deadline=T0, response="cordon")
    assert not decide.plan_for(cordon, settings(EXCLUDE_FROM_LB="true")).exclude_from_lb


# --- the worker's order --------------------------------------------------------------------------


def plan(notice_id: str, deadline: datetime) -> decide_terms.Plan:
    return decide.plan_for(record(notice_id, "scheduled", deadline=deadline), settings())


def test_uncordons_go_first_then_the_most_urgent_deadline():
    later, sooner = plan("later", T0 + timedelta(hours=2)), plan("sooner", T0 + timedelta(hours=1))
    undo = decide_terms.UncordonJob("old", "withdrawn")
    assert decide.next_job([later, sooner]) == 1
    assert decide.next_job([later, sooner, undo]) == 2
    assert decide.next_job([later]) == 0
    with pytest.raises(ValueError):
        decide.next_job([])


# --- holding notices for a lost state file, and the fast pace ----------------------------------


def test_notices_are_held_for_a_corrupt_file_until_the_node_is_read_and_for_a_missing_one_only_at_first():
    assert decide.holding_notices(decide.StateLoss.CORRUPT, startup_failures=3)
    assert decide.holding_notices(decide.StateLoss.MISSING, startup_failures=0)
    assert not decide.holding_notices(decide.StateLoss.MISSING, startup_failures=1)
    assert not decide.holding_notices(decide.StateLoss.NONE, startup_failures=0)


def test_hot_kinds_are_those_being_responded_to_or_all_while_the_node_is_unread():
    records = {"a": record("a", "scheduled", deadline=T0, phase=ACTING),
               "b": record("b", "rebalance", deadline=T0, phase=DONE)}
    assert decide.hot_kinds(records, decide.StateLoss.NONE) == {"scheduled"}
    assert decide.hot_kinds({}, decide.StateLoss.MISSING) == {"spot-itn", "rebalance", "scheduled", "asg"}


# --- the end of a response -----------------------------------------------------------------------


def ended(ending, progress=None, at=5.0, notice_id="n"):
    return decide_terms.ResponseEnded(notice_id, ending, progress, at)


def test_a_finished_response_closes_its_record_with_its_progress():
    open_record = record("n", "scheduled", deadline=T0, phase=ACTING)
    progress = record("n", "scheduled", deadline=T0, phase=ACTING, cordoned=True, drain_finished="x",
                      outcome="drained: 3 evicted")
    assert decide.response_ended(open_record, ended(decide_terms.Ending.FINISHED, progress)) == (
        decide_terms.Close("n", progress, 5.0),)


def test_a_stopped_response_or_one_whose_record_was_closed_says_how_far_it_got():
    progress = record("n", "scheduled", deadline=T0, phase=ACTING, cordoned=True, evicted=1)
    for phase, ending in [(CANCELLED, decide_terms.Ending.FINISHED), (SUPERSEDED, decide_terms.Ending.FINISHED),
                          (CANCELLED, decide_terms.Ending.STOPPED), (CANCELLED, decide_terms.Ending.INTERRUPTED)]:
        closed = record("n", "scheduled", deadline=T0, phase=phase)
        assert decide.response_ended(closed, ended(ending, progress)) == (decide_terms.StopEarly("n", progress),)


def test_an_interrupted_response_stays_open_unless_it_had_finished():
    acting = record("n", "scheduled", deadline=T0, phase=ACTING)
    halfway = record("n", "scheduled", deadline=T0, phase=ACTING, cordoned=True, evicted=1)
    assert decide.response_ended(acting, ended(decide_terms.Ending.INTERRUPTED, halfway)) == (decide_terms.KeepOpen(halfway),)
    done = record("n", "scheduled", deadline=T0, phase=ACTING, cordoned=True, drain_finished="x")
    assert decide.response_ended(acting, ended(decide_terms.Ending.INTERRUPTED, done)) == (decide_terms.Close("n", done, 5.0),)
    cordon = record("n", "rebalance", deadline=T0, phase=ACTING, response="cordon", cordoned=True)
    assert of(decide.response_ended(acting, ended(decide_terms.Ending.INTERRUPTED, cordon)), decide_terms.Close)


def test_a_response_too_late_to_start_expires_its_record_once():
    seen = record("n", "spot-itn", deadline=T0, phase=SEEN)
    [expire] = decide.response_ended(seen, ended(decide_terms.Ending.LATE))
    assert expire == Expire("n", "deadline passed before the response could start")
    assert "passed before Kubernetes was ready; not acting" in expire.message
    cancelled = record("n", "spot-itn", deadline=T0, phase=CANCELLED)
    assert decide.response_ended(cancelled, ended(decide_terms.Ending.LATE)) == ()


def test_a_response_dropped_before_it_began_changes_nothing():
    cancelled = record("n", "spot-itn", deadline=T0, phase=CANCELLED)
    assert decide.response_ended(cancelled, ended(decide_terms.Ending.DROPPED)) == ()


def test_an_uncordon_decided_before_a_restart_keeps_the_cordon_if_another_notice_now_holds_it():
    records = {
        "old": record("old", "rebalance", deadline=T0, phase=CANCELLED, response="cordon", cordoned=True,
                      uncordon_pending=True),
        "spot": record("spot", "spot-itn", deadline=T0 + timedelta(seconds=90), phase=ACTING, cordoned=True),
    }
    [uncordon] = of(decide.decide_start(records, settings(), ctx()), Uncordon)
    assert uncordon.keep and uncordon.held_by == "spot"
    del records["spot"]
    [uncordon] = of(decide.decide_start(records, settings(), ctx()), Uncordon)
    assert not uncordon.keep


# --- forgetting closed records -------------------------------------------------------------------


def closed_rebalances(count: int) -> Dict[str, NoticeRecord]:
    made = {}
    for i in range(count):
        seen = T0 + timedelta(minutes=i)
        made[f"rebalance-{i:03d}"] = NoticeRecord(
            id=f"rebalance-{i:03d}", kind="rebalance", action="rebalance", deadline=iso(seen), first_seen=iso(seen),
            response="cordon", phase=CANCELLED, outcome="notice withdrawn from IMDS; node uncordoned")
    return made


def test_closed_records_beyond_the_newest_few_are_forgotten_once_imds_no_longer_lists_them():
    records = closed_rebalances(25)
    forget = decide.forgettable(records, poll(T0), settings(), keep=20)
    assert forget == tuple(f"rebalance-{i:03d}" for i in range(5))  # the oldest five
    [action] = of(decide.decide_poll(records, poll(T0), {}, settings(), ctx()).actions, decide_terms.Forget)
    assert action.notice_ids == forget  # every answered poll decides it (KEEP_CLOSED)
    assert decide.forgettable(closed_rebalances(20), poll(T0), settings(), keep=20) == ()


def test_what_is_open_holds_the_node_or_is_still_listed_is_never_forgotten():
    records = closed_rebalances(3)
    records["open"] = record("open", "scheduled", deadline=T0 + timedelta(days=1), phase=ACTING)
    records["holding"] = record("holding", "scheduled", deadline=T0, phase=DONE, cordoned=True)
    records["undo"] = record("undo", "rebalance", deadline=T0, phase=CANCELLED, response="cordon",
                             uncordon_pending=True)
    records["rebalance-20261201T110000Z"] = record("rebalance-20261201T110000Z", "rebalance", deadline=T0,
                                                    phase="skipped", response="ignore")
    records["asg-terminated"] = record("asg-terminated", "asg", deadline=T0, phase=DONE, action="Terminated")
    listed = poll(T0, rebalance={"noticeTime": "2026-12-01T11:00:00Z"})  # the skipped one is still in IMDS
    forget = decide.forgettable(records, listed, settings(ASG_LIFECYCLE_HOOK="hook"), keep=0)
    assert set(forget) == {"rebalance-000", "rebalance-001", "rebalance-002"}
    # A path that did not answer this poll says nothing about its notices: kept until it does.
    assert decide.forgettable(records, poll(T0, answered=("spot-itn",)), settings(), keep=0) == ()
    # Without a hook configured, an ASG record has nothing left to complete.
    assert "asg-terminated" in decide.forgettable(records, listed, settings(), keep=0)
