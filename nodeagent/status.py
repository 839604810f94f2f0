"""`nodeagent status [--json] [--no-probe]`: the daemon's state, the last notice, drain progress,
whether IMDS and the API can be reached, and the config in short.

It reads the state file (never writes it) and works as a non-root user as far as it can: a state
file it may not read is reported as such, not a crash. Probes use short timeouts.

Exit status: 0 healthy; 1 a problem is listed (daemon not running, state file unreadable or not
a state file: missing permission, a symlink, a FIFO, over 16 MiB, not JSON or nested too deeply;
IMDS or API unreachable); 78 bad config.

JSON output (`--json`): one object; STATUS_SCHEMA lists every key (dotted for nested objects)
with its JSON type(s). docs/operating.md shows it.

This module assembles the report and names its problems; the parts are status_state.py (the
state file's sections), status_probes.py (IMDS and the API) and status_text.py (the text form).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

from nodeagent import __version__, terminal
from nodeagent.clock import iso_seconds, utcnow
from nodeagent.config import describe, load_with_set_flags
from nodeagent.jsontypes import JsonObject
from nodeagent.state import read_daemon_state
from nodeagent.status_probes import probe_api, probe_imds
from nodeagent.status_state import state_sections
from nodeagent.status_text import render_text

SCHEMA_VERSION = 1

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


def main_status(args) -> int:

    settings = load_with_set_flags(os.environ, args.set)
    report = collect(settings, probe=not args.no_probe)
    if args.json:
        terminal.say(json.dumps(report, indent=2, sort_keys=False))
    else:
        terminal.say(render_text(report))
    sys.stdout.flush()
    return 0 if report["healthy"] else 1
