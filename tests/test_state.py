"""The state file: atomic writes, quarantine of corrupt files, and a read-only directory."""
from __future__ import annotations

import json
import os

import pytest

from nodeagent.state import ACTING, AgentState, NoticeRecord, StateStore


def record(notice_id="spot-itn-1", phase=ACTING) -> NoticeRecord:
    return NoticeRecord(id=notice_id, kind="spot-itn", action="terminate", deadline="2026-01-01T00:00:00Z",
                        first_seen="2026-01-01T00:00:00Z", response="drain", phase=phase)


def test_round_trip_and_busy_flag(tmp_path):
    store = StateStore(str(tmp_path))
    state = AgentState()
    state.notices["spot-itn-1"] = record()
    assert store.save(state)
    raw = json.loads((tmp_path / "state.json").read_text())
    assert raw["busy"] is True
    loaded = store.load()
    assert loaded.error is None
    assert loaded.state.notices["spot-itn-1"].phase == ACTING
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"schema": 99}', b'{"schema": 1, "notices": {"a": {"x": 1}}}'])
def test_corrupt_file_is_quarantined(tmp_path, content):
    (tmp_path / "state.json").write_bytes(content)
    loaded = StateStore(str(tmp_path)).load()
    assert loaded.error and loaded.quarantined
    assert not (tmp_path / "state.json").exists()
    assert open(loaded.quarantined, "rb").read() == content
    assert loaded.state.notices == {}


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write a read-only directory")
def test_unwritable_directory_carries_on_from_memory(tmp_path):
    tmp_path.chmod(0o500)
    store = StateStore(str(tmp_path))
    assert store.save(AgentState()) is False
    assert store.writable is False


def test_unwritable_path_carries_on_from_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = StateStore(str(blocker / "state"))  # a directory under a regular file cannot exist
    assert store.save(AgentState()) is False
    assert not store.writable and "carrying on from memory" in store.last_error
