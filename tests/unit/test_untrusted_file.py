"""Files that root reads from the service user's state directory: no symlink followed, no hang on
a FIFO, a bound on size, and every parse error an answer rather than an exception."""
from __future__ import annotations

import os
import threading
from datetime import datetime, timezone

import pytest

from nodeagent.state import MAX_STATE_BYTES, StateStore, read_daemon_state
from nodeagent.status_state import state_sections
from nodeagent.untrusted_file import UnsafeFileError, read_untrusted_file

NESTED = "[" * 100_000 + "]" * 100_000


def finishes(call, timeout: float = 5.0):
    """call() in a thread; its result, or a failure if it blocks (a FIFO open without
    O_NONBLOCK waits for a writer forever; the caller's cleanup opens one to release it)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail("the read blocked (a FIFO opened without O_NONBLOCK?)")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "state.json"
    os.mkfifo(path)
    yield path
    # Release a reader that blocked in open() (on code that lets a FIFO hang it).
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


def test_reads_a_regular_file(tmp_path):
    (tmp_path / "f").write_bytes(b"hello")
    assert read_untrusted_file(str(tmp_path / "f"), 5) == b"hello"


def test_refuses_a_symlink_and_leaves_its_target_alone(tmp_path):
    target = tmp_path / "secret"
    target.write_text("root only")
    (tmp_path / "f").symlink_to(target)
    with pytest.raises(UnsafeFileError, match="symbolic link"):
        read_untrusted_file(str(tmp_path / "f"), 1024)


def test_a_fifo_is_refused_at_once(fifo):
    with pytest.raises(UnsafeFileError, match="a FIFO, not a regular file"):
        finishes(lambda: read_untrusted_file(str(fifo), 1024))


def test_a_directory_is_refused(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(UnsafeFileError, match="a directory"):
        read_untrusted_file(str(tmp_path / "d"), 1024)


def test_a_file_over_the_bound_is_refused(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 11)
    with pytest.raises(UnsafeFileError, match="larger than 10 bytes"):
        read_untrusted_file(str(tmp_path / "f"), 10)


def test_a_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_untrusted_file(str(tmp_path / "none"), 10)


# --- the state file, as status, the drill and upgrade-restart's twin read it --------------------------

def test_state_reader_does_not_hang_on_a_fifo(fifo):
    read = finishes(lambda: read_daemon_state(str(fifo.parent)))
    assert read.data is None and read.corrupt
    assert read.error == f"{fifo} is a FIFO, not a regular file; the daemon moves it aside at start"


def test_state_reader_does_not_follow_a_symlink(tmp_path):
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"busy": false}')
    (tmp_path / "state.json").symlink_to(elsewhere)
    read = read_daemon_state(str(tmp_path))
    assert read.data is None and "symbolic link" in (read.error or "")


def test_state_reader_refuses_a_huge_file(tmp_path):
    with open(tmp_path / "state.json", "wb") as handle:
        handle.truncate(MAX_STATE_BYTES + 1)  # sparse: no disk used
    read = read_daemon_state(str(tmp_path))
    assert read.data is None and f"larger than {MAX_STATE_BYTES} bytes" in (read.error or "")


def test_state_reader_reports_json_nested_too_deeply(tmp_path):
    (tmp_path / "state.json").write_text(NESTED)
    read = read_daemon_state(str(tmp_path))
    assert read.data is None and read.corrupt == "nested too deeply to parse"
    assert "is not valid JSON (nested too deeply to parse)" in (read.error or "")


def test_the_daemon_moves_a_nested_state_file_aside(tmp_path):
    (tmp_path / "state.json").write_text(NESTED)
    loaded = StateStore(str(tmp_path)).load()
    assert loaded.error == "corrupt state file: nested too deeply to parse"
    assert loaded.quarantined and not (tmp_path / "state.json").exists()


def test_the_daemon_moves_a_fifo_aside_without_blocking(fifo):
    loaded = finishes(lambda: StateStore(str(fifo.parent)).load())
    assert loaded.error and "a FIFO" in loaded.error
    assert loaded.quarantined and not fifo.exists()


@pytest.mark.parametrize("content", [
    '{"schema": 1, "updated_at": 1e300}',
    '{"schema": 1, "pid": 1e400}',
    '{"schema": 1, "notices": {"a": {"left": 5}}, "last_notice": "a"}',
    '{"schema": 1, "notices": {"a": {}}, "last_notice": ["a"]}',
], ids=["huge-time", "infinite-pid", "left-not-a-list", "key-not-a-string"])
def test_status_reports_a_malformed_state_file(tmp_path, content):
    (tmp_path / "state.json").write_text(content)
    daemon, notice, progress = state_sections(read_daemon_state(str(tmp_path)), datetime.now(timezone.utc))
    assert notice is None and progress is None
    assert daemon["state_file_error"] and "is not a nodeagent state file" in daemon["state_file_error"]
