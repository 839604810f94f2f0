"""The state file: atomic writes, quarantine of corrupt files, and a read-only directory."""
from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys

import pytest

from nodeagent.state import ACTING, AgentState, NoticeRecord, StateStore
from tests.helpers import REPO


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


def test_saving_leaves_no_reference_cycles(tmp_path):
    """The daemon writes the file at every step of every notice: what a write allocates must be
    freed by reference counting, not left for the cyclic collector's rare full passes."""
    store = StateStore(str(tmp_path))
    state = AgentState()
    state.notices["spot-itn-1"] = record()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        assert store.save(state)
        gc.collect()
        left = [type(thing).__name__ for thing in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b'{"schema": 99}', b'{"schema": 1, "notices": {"a": {"x": 1}}}'])
def test_corrupt_file_is_quarantined(tmp_path, content):
    (tmp_path / "state.json").write_bytes(content)
    loaded = StateStore(str(tmp_path)).load()
    assert loaded.error and loaded.quarantined
    assert not (tmp_path / "state.json").exists()
    assert open(loaded.quarantined, "rb").read() == content
    assert loaded.state.notices == {}


SAVE_AND_REPORT = """
import json, sys
from nodeagent.state import AgentState, StateStore
store = StateStore(sys.argv[1])
saved = store.save(AgentState())
print(json.dumps({"saved": saved, "writable": store.writable, "error": store.last_error}))
"""


def test_unwritable_directory_carries_on_from_memory(tmp_path):
    """A directory the agent cannot write: save() says so and the agent carries on from memory.
    Root writes through a 0500 mode, so as root (as in CI) the directory is made read-only with a
    bind mount in a private mount namespace (unshare -m), which root cannot write through either."""
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.fail("unshare (util-linux) is needed to make a read-only directory as root")
        script = (f'mount --bind "{state_dir}" "{state_dir}" && mount -o remount,bind,ro "{state_dir}" && '
                  f'exec "{sys.executable}" -c "$0" "{state_dir}"')
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, SAVE_AND_REPORT]
    else:
        state_dir.chmod(0o500)
        command = [sys.executable, "-c", SAVE_AND_REPORT, str(state_dir)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["saved"] is False and report["writable"] is False
    assert "carrying on from memory" in report["error"]
    assert ("Read-only file system" if os.geteuid() == 0 else "Permission denied") in report["error"]
    assert not list(state_dir.iterdir())


def test_unwritable_path_carries_on_from_memory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    store = StateStore(str(blocker / "state"))  # a directory under a regular file cannot exist
    assert store.save(AgentState()) is False
    assert not store.writable and "carrying on from memory" in store.last_error


def test_a_state_file_written_with_plain_strings_loads_into_enums_and_saves_the_same_text(tmp_path):
    from nodeagent.notices import NoticeKind
    from nodeagent.state import Phase

    written = {"schema": 1, "busy": False, "last_notice": "scheduled-e", "status": "watching", "agent_state": "drained",
               "drain_progress": None, "updated_at": 1.0, "pid": 7,
               "notices": {"scheduled-e": {**record("scheduled-e").__dict__, "kind": "scheduled", "phase": "done"}}}
    (tmp_path / "state.json").write_text(json.dumps(written))
    store = StateStore(str(tmp_path))
    loaded = store.load()
    assert loaded.error is None
    got = loaded.state.notices["scheduled-e"]
    assert got.kind is NoticeKind.SCHEDULED and got.phase is Phase.DONE
    assert f"{got.kind} {got.phase}" == "scheduled done"
    store.save(loaded.state)
    again = json.loads((tmp_path / "state.json").read_text())
    assert again["notices"] == written["notices"]


def test_an_unknown_phase_or_kind_makes_the_file_corrupt_not_the_daemon_die(tmp_path):
    bad = {"schema": 1, "notices": {"a": {**record("a").__dict__, "kind": "spot-itn", "phase": "exploded"}}}
    (tmp_path / "state.json").write_text(json.dumps(bad))
    loaded = StateStore(str(tmp_path)).load()
    assert loaded.error and "exploded" in loaded.error and loaded.quarantined
