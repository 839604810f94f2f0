"""State file and metrics textfile writes are not steered by symlinks in their directory .

Whoever owns the directory can swap the temporary file for a symlink right after it is created;
a chmod by name would then follow the link and make its target world-readable. The swap is done
here at exactly that moment, by wrapping os.open (which tempfile uses too)."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nodeagent.atomic_file import replace_file
from nodeagent.report.metrics import write_atomically
from nodeagent.state import AgentState, StateStore


def _swap_in_symlink_after_create(monkeypatch, directory: Path, target: Path) -> list:
    """Every file created in `directory` is replaced by a symlink to `target` as soon as it exists."""
    real_open = os.open
    swapped = []

    def open_then_swap(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT and Path(path).parent == directory:
            os.unlink(path)
            os.symlink(target, path)
            swapped.append(str(path))
        return fd

    monkeypatch.setattr(os, "open", open_then_swap)
    return swapped


def _secret(tmp_path: Path) -> Path:
    target = tmp_path / "secret"
    target.write_text("root-only\n")
    target.chmod(0o600)
    return target


def test_state_save_does_not_chmod_through_a_swapped_in_symlink(tmp_path, monkeypatch):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    target = _secret(tmp_path)
    store = StateStore(str(state_dir))
    swapped = _swap_in_symlink_after_create(monkeypatch, state_dir, target)
    store.save(AgentState())
    monkeypatch.undo()
    assert swapped, "the race was not staged"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "root-only\n"


def test_metrics_write_does_not_chmod_through_a_swapped_in_symlink(tmp_path, monkeypatch):
    directory = tmp_path / "textfile"
    directory.mkdir()
    target = _secret(tmp_path)
    swapped = _swap_in_symlink_after_create(monkeypatch, directory, target)
    write_atomically(str(directory / "nodeagent.prom"), "nodeagent_up 1\n")
    monkeypatch.undo()
    assert swapped, "the race was not staged"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.read_text() == "root-only\n"


def test_the_file_gets_its_mode_whatever_the_umask_and_no_temporary_is_left(tmp_path):
    old = os.umask(0o077)
    try:
        replace_file(str(tmp_path / "f"), b"data", 0o644)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o644
    assert (tmp_path / "f").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_a_planted_temporary_name_is_never_followed(tmp_path, monkeypatch):
    """Names are random; even a planted one (forced here) is skipped, not opened through."""
    target = _secret(tmp_path)
    names = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr("nodeagent.atomic_file.secrets.token_hex", lambda n: next(names))
    (tmp_path / ".nodeagent.aaaaaaaaaaaa.tmp").symlink_to(target)
    replace_file(str(tmp_path / "f"), b"new", 0o644)
    assert target.read_text() == "root-only\n" and stat.S_IMODE(target.stat().st_mode) == 0o600
    assert (tmp_path / "f").read_bytes() == b"new"


def test_a_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "Input/output error")))
    with pytest.raises(OSError):
        replace_file(str(tmp_path / "f"), b"x", 0o644)
    assert list(tmp_path.iterdir()) == []
