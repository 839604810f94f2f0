"""`nodeagent status [--json] [--no-probe]`: the daemon's state, the last notice, drain progress,
whether IMDS and the API can be reached, and the config in short.

It reads the state file (never writes it) and works as a non-root user as far as it can: a state
file it may not read is reported as such, not a crash. Probes use short timeouts.

Exit status: 0 healthy; 1 a problem is listed (daemon not running, state file unreadable or not
a state file: missing permission, a symlink, a FIFO, over 16 MiB, not JSON or nested too deeply;
IMDS or API unreachable); 78 bad config.

JSON output (`--json`): one object; STATUS_SCHEMA lists every key (dotted for nested objects)
with its JSON type(s). docs/operating.md shows it.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from nodeagent import __version__, terminal
from nodeagent.clock import iso_seconds, utcnow
from nodeagent.config import describe, load_with_set_flags
from nodeagent.imds import ImdsClient, ImdsError, ImdsOptions
from nodeagent.jsontypes import JsonObject
from nodeagent.kube.client import KubeApi, KubeOptions
from nodeagent.kube.errors import KubeError
from nodeagent.kube.identity import find_node
from nodeagent.kube.node import LABEL_AGENT, LABEL_VERSION
from nodeagent.logs import one_line
from nodeagent.other_handlers import find_other_handlers
from nodeagent.state import StateRead, read_daemon_state
from nodeagent.timefmt import parse_rfc3339_utc

SCHEMA_VERSION = 1
API_PROBE_TIMEOUT_S = 15.0

# Every key of `nodeagent status --json`, with its JSON types. "object|null" keys list their
# members as "key.member" when the object is present.
NOTICE_FIELDS: dict[str, str] = {
    "id": "string",
    "kind": "string",
    "action": "string",
    "deadline": "string",
    "deadline_in_s": "number",
    "first_seen": "string",
    "response": "string",
    "phase": "string",
    "outcome": "string",
    "cordoned": "boolean",
    "evicted": "integer",
    "forced": "integer",
    "failed": "integer",
    "left": "array[string]",
    "drain_started": "string|null",
    "drain_finished": "string|null",
    "lifecycle": "object|null (ASG_LIFECYCLE_HOOK: heartbeats, last_heartbeat, completed_at, "
    "outcome, held_s)",
}
PROGRESS_FIELDS: dict[str, str] = {
    "notice": "string",
    "gone": "integer",
    "total": "integer",
    "deadline": "string",
    "deadline_in_s": "number",
}
STATUS_SCHEMA: dict[str, str] = {
    "schema": "integer",
    "version": "string",
    "generated_at": "string",
    "healthy": "boolean",
    "problems": "array[string]",
    "daemon": "object",
    "daemon.running": "boolean|null",
    "daemon.pid": "integer|null",
    "daemon.agent_state": "string|null",
    "daemon.status": "string|null",
    "daemon.busy": "boolean|null",
    "daemon.updated_at": "string|null",
    "daemon.notices_recorded": "integer|null",
    "daemon.state_file": "string",
    "daemon.state_file_error": "string|null",
    "last_notice": "object|null",
    **{f"last_notice.{key}": kind for key, kind in NOTICE_FIELDS.items()},
    "drain_progress": "object|null",
    **{f"drain_progress.{key}": kind for key, kind in PROGRESS_FIELDS.items()},
    "imds": "object",
    "imds.checked": "boolean",
    "imds.reachable": "boolean|null",
    "imds.url": "string",
    "imds.latency_ms": "number|null",
    "imds.instance_id": "string|null",
    "imds.availability_zone": "string|null",
    "imds.instance_type": "string|null",
    "imds.life_cycle": "string|null",
    "imds.error": "string|null",
    "api": "object",
    "api.checked": "boolean",
    "api.reachable": "boolean|null",
    "api.server": "string|null",
    "api.latency_ms": "number|null",
    "api.node": "string|null",
    "api.node_from": "string|null",
    "api.unschedulable": "boolean|null",
    "api.agent_label": "string|null",
    "api.version_label": "string|null",
    "api.error": "string|null",
    "api.other_handlers": "array[string]",
    "config": "object (KEY -> {value: string, source: string}; secrets shown as <set, hidden>)",
}


def _seconds_until(text: str | None, now: datetime) -> float | None:
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
        "deadline_in_s": _seconds_until(record.get("deadline"), now) or 0.0,
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
        "deadline_in_s": _seconds_until(progress.get("deadline"), now) or 0.0,
    }


# ------------------------------------------------------------------ probes


def probe_imds(settings, checked: bool) -> tuple[JsonObject, object]:
    """(section, identity or None). Short timeouts and a single attempt."""
    section: JsonObject = {
        "checked": checked,
        "reachable": None,
        "url": settings.imds_url,
        "latency_ms": None,
        "instance_id": None,
        "availability_zone": None,
        "instance_type": None,
        "life_cycle": None,
        "error": None,
    }
    if not checked:
        return section, None

    options = ImdsOptions(
        base_url=settings.imds_url,
        allow_v1=settings.imds_allow_v1,
        connect_timeout_s=0.5,
        read_timeout_s=1.0,
        retry_attempts=1,
    )
    started = time.monotonic()
    try:
        with ImdsClient(options) as client:
            identity = client.identity()
    except ImdsError as error:
        section.update(reachable=False, error=str(error))
        return section, None
    section.update(
        reachable=True,
        latency_ms=round((time.monotonic() - started) * 1000, 1),
        instance_id=identity.instance_id,
        availability_zone=identity.availability_zone,
        instance_type=identity.instance_type,
        life_cycle=identity.life_cycle,
    )
    return section, identity


def probe_api(settings, identity, checked: bool, timeout_s: float = API_PROBE_TIMEOUT_S) -> JsonObject:
    section: JsonObject = {
        "checked": checked,
        "reachable": None,
        "server": None,
        "latency_ms": None,
        "node": None,
        "node_from": None,
        "unschedulable": None,
        "agent_label": None,
        "version_label": None,
        "error": None,
        "other_handlers": [],
    }
    if not checked:
        return section
    outcome: JsonObject = {}
    worker = threading.Thread(target=_api_probe_body, args=(settings, identity, outcome), daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        section.update(
            reachable=False, server=outcome.get("server"), error=f"no answer within {timeout_s:g}s"
        )
        return section
    section.update(outcome)
    return section


def _api_probe_body(settings, identity, out: JsonObject) -> None:

    api = None
    try:
        api = KubeApi(
            KubeOptions(
                kubeconfig=settings.kubeconfig,
                connect_timeout_s=2.0,
                read_timeout_s=3.0,
                exec_timeout_s=min(settings.exec_plugin_timeout, 10.0),
                pool_size=2,
            )
        )
        out["server"] = api.host
        started = time.monotonic()
        if api.tokens is not None:
            api.tokens.refresh()
        node = find_node(
            api,
            settings.node_name,
            identity.instance_id if identity is not None else None,
            identity.availability_zone if identity is not None else None,
        )
        out.update(
            reachable=True,
            latency_ms=round((time.monotonic() - started) * 1000, 1),
            node=node.name,
            node_from=node.how,
            unschedulable=node.unschedulable,
            agent_label=node.labels.get(LABEL_AGENT),
            version_label=node.labels.get(LABEL_VERSION),
        )
        listing = api.request("GET", "/api/v1/pods", query=[("fieldSelector", f"spec.nodeName={node.name}")])
        items = listing.get("items")
        found = find_other_handlers(items if isinstance(items, list) else [], node.name)
        out["other_handlers"] = [f"{handler.key} ({handler.matched_by})" for handler in found]
    except KubeError as error:
        out.update(reachable=False, error=str(error))
    except Exception as error:  # a probe must never crash `status`
        out.update(reachable=False, error=f"{type(error).__name__}: {error}")
    finally:
        if api is not None:
            api.close()


# ------------------------------------------------------------------ assembling


def config_section(settings) -> dict[str, dict[str, str]]:

    return {key: {"value": value, "source": source} for key, value, source in describe(settings)}


def problems_of(report: JsonObject) -> list[str]:
    problems: list[str] = []
    daemon = report["daemon"]
    assert isinstance(daemon, dict)
    if daemon["state_file_error"]:
        problems.append(str(daemon["state_file_error"]))
    elif daemon["running"] is False:
        problems.append(
            "the daemon is not running" + (" (it stopped cleanly)" if daemon["status"] == "stopped" else "")
        )
    for name in ("imds", "api"):
        section = report[name]
        assert isinstance(section, dict)
        if section["checked"] and not section["reachable"]:
            problems.append(
                f"{'IMDS' if name == 'imds' else 'Kubernetes API'} unreachable: {section['error']}"
            )
    api = report["api"]
    if isinstance(api, dict) and api.get("other_handlers"):
        problems.append(
            f"aws-node-termination-handler runs on this node too ({', '.join(api['other_handlers'])}): "
            "both would cordon and drain it; keep NTH off nodes that run nodeagent "
            "(docs/migrating-from-nth.md)"
        )
    notice = report.get("last_notice")
    hook = notice.get("lifecycle") if isinstance(notice, dict) else None
    if isinstance(hook, dict) and str(hook["outcome"]).startswith("failed"):
        problems.append(
            f"lifecycle action not completed ({hook['outcome']}): the instance waits for the hook's timeout"
        )
    return problems


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


def collect(settings, probe: bool = True, now: datetime | None = None) -> JsonObject:
    now = now or utcnow()
    daemon, last_notice, drain_progress = state_sections(read_daemon_state(settings.state_dir), now)
    imds, identity = probe_imds(settings, probe)
    report: JsonObject = {
        "schema": SCHEMA_VERSION,
        "version": __version__,
        "generated_at": iso_seconds(now),
        "healthy": True,
        "problems": [],
        "daemon": daemon,
        "last_notice": last_notice,
        "drain_progress": drain_progress,
        "imds": imds,
        "api": probe_api(settings, identity, probe),
        "config": config_section(settings),
    }
    problems = problems_of(report)
    report["problems"] = problems
    report["healthy"] = not problems
    return report


# ------------------------------------------------------------------ text


def _ago(iso_text: str | None, now: datetime) -> str:
    seconds = _seconds_until(iso_text, now)
    if seconds is None:
        return ""
    seconds = -seconds
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _in(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"in {seconds:.0f}s" if seconds >= 0 else f"{-seconds:.0f}s ago"


RESPONSE_KEYS = (
    ("spot-itn", "ON_SPOT_INTERRUPTION"),
    ("rebalance", "ON_REBALANCE"),
    ("scheduled", "ON_SCHEDULED_EVENT"),
    ("asg", "ON_ASG_TERMINATION"),
)
ALWAYS_SHOWN = ("STATE_DIR", "KUBECONFIG", "IMDS_URL", "DRY_RUN")


def render_text(report: JsonObject, now: datetime | None = None) -> str:
    now = now or utcnow()
    lines: list[str] = [f"nodeagent {report['version']} status ({report['generated_at']})"]

    def row(label: str, text: str) -> None:
        text = one_line(text)  # one row per line: a quoted message cannot add rows of its own
        lines.append(f"  {label:<12} {text}" if label else f"  {'':<12} {text}")

    daemon = report["daemon"]
    assert isinstance(daemon, dict)
    if daemon["state_file_error"]:
        row("daemon:", f"unknown: {daemon['state_file_error']}")
    else:
        state = (
            "running" if daemon["running"] else ("not running" if daemon["running"] is False else "unknown")
        )
        pid = f" (pid {daemon['pid']})" if daemon["pid"] else ""
        row(
            "daemon:",
            f"{state}{pid}; node {daemon['agent_state']}; "
            f"state file updated {_ago(daemon['updated_at'], now)}"
            f"{'; BUSY: a notice is being handled' if daemon['busy'] else ''}",
        )
        if daemon["status"]:
            row("", f"status: {daemon['status']}")
    notice = report["last_notice"]
    if isinstance(notice, dict):
        row(
            "last notice:",
            f"{notice['id']} ({notice['kind']}: {notice['action']}), first seen {notice['first_seen']}, "
            f"deadline {notice['deadline']} ({_in(notice['deadline_in_s'])})",
        )
        row(
            "",
            f"response {notice['response']}, phase {notice['phase']}"
            f"{': ' + notice['outcome'] if notice['outcome'] else ''}",
        )
        hook = notice.get("lifecycle")
        if isinstance(hook, dict):
            beats = f"{hook['heartbeats']} heartbeat(s)" + (
                f", last {hook['last_heartbeat']}" if hook["last_heartbeat"] else ""
            )
            if hook["completed_at"]:
                held = f", held {hook['held_s']:.1f}s" if hook["held_s"] is not None else ""
                row(
                    "lifecycle:", f"{hook['outcome'] or 'completed'} at {hook['completed_at']}{held}; {beats}"
                )
            else:
                row("lifecycle:", f"{hook['outcome'] or 'pending'}; {beats}")
    elif not daemon["state_file_error"]:
        row("last notice:", "none")
    progress = report["drain_progress"]
    if isinstance(progress, dict):
        row(
            "drain:",
            f"{progress['gone']}/{progress['total']} pods gone, deadline {_in(progress['deadline_in_s'])}",
        )
    imds = report["imds"]
    assert isinstance(imds, dict)
    if not imds["checked"]:
        row("IMDS:", f"not probed (--no-probe); {imds['url']}")
    elif imds["reachable"]:
        row(
            "IMDS:",
            f"reachable at {imds['url']} ({imds['latency_ms']:.0f} ms): {imds['instance_id']} "
            f"{imds['instance_type']} in {imds['availability_zone']}, {imds['life_cycle']}",
        )
    else:
        row("IMDS:", f"UNREACHABLE at {imds['url']}: {imds['error']}")
    api = report["api"]
    assert isinstance(api, dict)
    if not api["checked"]:
        row("API:", "not probed (--no-probe)")
    elif api["reachable"]:
        row(
            "API:",
            f"reachable at {api['server']} ({api['latency_ms']:.0f} ms): node {api['node']} "
            f"(from {api['node_from']}), {'cordoned' if api['unschedulable'] else 'schedulable'}, "
            f"nodeagent.io/agent={api['agent_label'] or '(unset)'}",
        )
    else:
        row("API:", f"UNREACHABLE{' at ' + str(api['server']) if api['server'] else ''}: {api['error']}")
    config = report["config"]
    assert isinstance(config, dict)
    responses = " ".join(f"{kind}={config[key]['value']}" for kind, key in RESPONSE_KEYS)
    row("config:", f"responses: {responses}")
    shown = [key for key in ALWAYS_SHOWN]
    shown += [
        key
        for key, entry in config.items()
        if entry["source"] != "default" and key not in shown and key not in dict(RESPONSE_KEYS).values()
    ]
    for key in shown:
        entry = config[key]
        row("", f"{key}={entry['value']}  ({entry['source']})")
    problems = report["problems"]
    assert isinstance(problems, list)
    row("problems:", "none" if not problems else problems[0])
    for problem in problems[1:]:
        row("", problem)
    return "\n".join(lines)


def main_status(args) -> int:

    settings = load_with_set_flags(os.environ, args.set)
    report = collect(settings, probe=not args.no_probe)
    if args.json:
        terminal.say(json.dumps(report, indent=2, sort_keys=False))
    else:
        terminal.say(render_text(report))
    sys.stdout.flush()
    return 0 if report["healthy"] else 1
