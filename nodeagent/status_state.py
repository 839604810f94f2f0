"""`nodeagent status`: the daemon, last notice and drain progress sections, read from the state
file the daemon writes (never written here).

The file is the service user's to write, so nothing in it is trusted: a value of the wrong type or
out of range is reported as a state file error, never a traceback. Pure but for
process_is_nodeagent, which asks the kernel whether the pid the file names is alive.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from nodeagent.clock import iso_seconds
from nodeagent.jsontypes import JsonObject
from nodeagent.state import StateRead
from nodeagent.timefmt import parse_rfc3339_utc


def seconds_until(text: str | None, now: datetime) -> float | None:
    if not text:
        return None

    try:
        return round((parse_rfc3339_utc(str(text)) - now).total_seconds(), 1)
    except ValueError:
        return None


def process_is_nodeagent(pid: int) -> bool | None:
    """True when pid is a live nodeagent process, False when not, None when we cannot tell."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return None  # e.g. /proc mounted with hidepid
    return b"nodeagent" in cmdline


def _int(value: Any, default: int = 0) -> int:  # Any: a field of a JSON file, checked here
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def daemon_section(
    read: StateRead, is_alive: Callable[[int], bool | None] = process_is_nodeagent
) -> JsonObject:
    data = read.data or {}
    pid = _int(data.get("pid")) if read.data is not None else None
    running: bool | None = None
    if read.data is not None:
        running = False if data.get("status") == "stopped" else is_alive(pid or 0)
    updated = data.get("updated_at")
    notices = data.get("notices") if isinstance(data.get("notices"), dict) else None
    return {
        "running": running,
        "pid": pid or None,
        "agent_state": _str_or_none(data.get("agent_state")),
        "status": _str_or_none(data.get("status")),
        "busy": bool(data.get("busy")) if read.data is not None else None,
        "updated_at": iso_seconds(datetime.fromtimestamp(float(updated), timezone.utc))
        if isinstance(updated, (int, float)) and updated
        else None,
        "notices_recorded": len(notices) if notices is not None else (None if read.data is None else 0),
        "state_file": read.path,
        "state_file_error": read.error,
    }


def last_notice_section(data: JsonObject | None, now: datetime) -> JsonObject | None:
    if not data:
        return None
    notices = data.get("notices")
    key = data.get("last_notice")
    if not isinstance(notices, dict) or not key or not isinstance(notices.get(key), dict):
        return None
    record = notices[key]
    return {
        "id": str(record.get("id", key)),
        "kind": str(record.get("kind", "")),
        "action": str(record.get("action", "")),
        "deadline": str(record.get("deadline", "")),
        "deadline_in_s": seconds_until(record.get("deadline"), now) or 0.0,
        "first_seen": str(record.get("first_seen", "")),
        "response": str(record.get("response", "")),
        "phase": str(record.get("phase", "")),
        "outcome": str(record.get("outcome", "")),
        "cordoned": bool(record.get("cordoned")),
        "evicted": _int(record.get("evicted")),
        "forced": _int(record.get("forced")),
        "failed": _int(record.get("failed")),
        "left": [str(item) for item in record.get("left") or []],
        "drain_started": _str_or_none(record.get("drain_started")),
        "drain_finished": _str_or_none(record.get("drain_finished")),
        "lifecycle": lifecycle_section(record),
    }


def lifecycle_section(record: dict[str, object]) -> dict[str, object] | None:
    """ASG_LIFECYCLE_HOOK: what Auto Scaling was told about this notice (None: nothing yet)."""
    heartbeats = _int(record.get("lifecycle_heartbeats"))
    completed = _str_or_none(record.get("lifecycle_completed_at"))
    outcome = str(record.get("lifecycle_outcome") or "")
    if not heartbeats and not completed and not outcome:
        return None
    held = None
    first_seen = _str_or_none(record.get("first_seen"))
    if completed and first_seen:
        try:
            held = max(0.0, (parse_rfc3339_utc(completed) - parse_rfc3339_utc(first_seen)).total_seconds())
        except ValueError:
            held = None
    return {
        "heartbeats": heartbeats,
        "last_heartbeat": _str_or_none(record.get("lifecycle_heartbeat_at")),
        "completed_at": completed,
        "outcome": outcome,
        "held_s": held,
    }


def progress_section(data: dict[str, object] | None, now: datetime) -> dict[str, object] | None:
    progress = (data or {}).get("drain_progress")
    if not isinstance(progress, dict):
        return None
    return {
        "notice": str(progress.get("notice", "")),
        "gone": _int(progress.get("gone")),
        "total": _int(progress.get("total")),
        "deadline": str(progress.get("deadline", "")),
        "deadline_in_s": seconds_until(progress.get("deadline"), now) or 0.0,
    }


def state_sections(read: StateRead, now: datetime) -> tuple[JsonObject, JsonObject | None, JsonObject | None]:
    """The daemon, last notice and drain progress sections. The file is the service user's to
    write, so a value of the wrong type or out of range anywhere in it is reported as a state file
    error, never a traceback."""
    try:
        return (
            daemon_section(read),
            last_notice_section(read.data, now),
            progress_section(read.data, now) if (read.data or {}).get("busy") else None,
        )
    except (ValueError, TypeError, OverflowError, AttributeError, RecursionError) as error:
        problem = f"{read.path} is not a nodeagent state file ({type(error).__name__}: {error})"
        return daemon_section(StateRead(read.path, None, problem, corrupt=problem)), None, None
