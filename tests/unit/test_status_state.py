"""status_state: the state file's sections for `nodeagent status`, with a fixed clock and a
stand-in for the pid check (no processes, no files)."""

from __future__ import annotations

from datetime import datetime, timezone

from nodeagent.state import StateRead
from nodeagent.status_state import daemon_section, last_notice_section, progress_section, state_sections

NOW = datetime(2025, 1, 1, 0, 1, 0, tzinfo=timezone.utc)
RECORD = {
    "id": "spot-itn-1",
    "kind": "spot-itn",
    "action": "terminate",
    "deadline": "2025-01-01T00:02:00Z",
    "first_seen": "2025-01-01T00:00:00Z",
    "response": "drain",
    "phase": "draining",
    "cordoned": True,
    "evicted": 3,
    "left": ["default/a"],
    "lifecycle_heartbeats": 2,
    "lifecycle_completed_at": "2025-01-01T00:00:30Z",
    "lifecycle_outcome": "CONTINUE",
}
DATA = {
    "pid": 4242,
    "status": "acting",
    "agent_state": "acting",
    "busy": True,
    "updated_at": 1735689600.0,
    "notices": {"spot-itn-1": RECORD},
    "last_notice": "spot-itn-1",
    "drain_progress": {"notice": "spot-itn-1", "gone": 3, "total": 4, "deadline": "2025-01-01T00:02:00Z"},
}


def test_daemon_section_asks_whether_the_recorded_pid_is_alive():
    asked = []
    section = daemon_section(StateRead("/s/state.json", DATA, None), lambda pid: asked.append(pid) or True)
    assert asked == [4242]
    assert section["running"] is True and section["pid"] == 4242 and section["busy"] is True
    assert section["updated_at"] == "2025-01-01T00:00:00Z" and section["notices_recorded"] == 1


def test_a_stopped_daemon_is_not_running_without_asking():
    data = dict(DATA, status="stopped")
    section = daemon_section(StateRead("/s/state.json", data, None), lambda pid: 1 / 0)
    assert section["running"] is False


def test_an_unread_file_leaves_everything_unknown():
    section = daemon_section(StateRead("/s/state.json", None, "permission denied"), lambda pid: True)
    assert section["running"] is None and section["busy"] is None and section["notices_recorded"] is None
    assert section["state_file_error"] == "permission denied"


def test_last_notice_counts_down_to_its_deadline_and_says_how_long_the_hook_held():
    notice = last_notice_section(DATA, NOW)
    assert notice is not None
    assert notice["deadline_in_s"] == 60.0 and notice["evicted"] == 3 and notice["left"] == ["default/a"]
    assert notice["lifecycle"] == {
        "heartbeats": 2,
        "last_heartbeat": None,
        "completed_at": "2025-01-01T00:00:30Z",
        "outcome": "CONTINUE",
        "held_s": 30.0,
    }


def test_a_notice_without_hook_steps_has_no_lifecycle():
    record = {key: value for key, value in RECORD.items() if not key.startswith("lifecycle")}
    notice = last_notice_section(dict(DATA, notices={"spot-itn-1": record}), NOW)
    assert notice is not None and notice["lifecycle"] is None


def test_progress_is_shown_only_while_busy():
    assert progress_section(DATA, NOW) == {
        "notice": "spot-itn-1", "gone": 3, "total": 4, "deadline": "2025-01-01T00:02:00Z", "deadline_in_s": 60.0,
    }
    _, _, progress = state_sections(StateRead("/s/state.json", dict(DATA, busy=False, status="stopped"), None), NOW)
    assert progress is None
