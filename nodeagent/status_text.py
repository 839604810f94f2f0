"""`nodeagent status` as text: one row per fact, from the report status.collect builds. Pure."""

from __future__ import annotations

from datetime import datetime

from nodeagent.clock import utcnow
from nodeagent.jsontypes import JsonObject
from nodeagent.logs import one_line
from nodeagent.status_state import seconds_until


def _ago(iso_text: str | None, now: datetime) -> str:
    seconds = seconds_until(iso_text, now)
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
