"""What a webhook says: the fields of a message about a notice record, and its body.

Formats: `json` (a generic object) and `slack` (an incoming-webhook `{"text": ...}`, every
field's `&`, `<` and `>` escaped so that no value can mention a channel or show a link). Each has a
built-in template that WEBHOOK_TEMPLATE can replace with a file. Templates are `string.Template`
text (`${field}` placeholders, so JSON braces need no escaping): a string field is inserted
JSON-escaped without quotes (put it inside a JSON string), a number, boolean or null field as a
JSON literal. The rendered body must be JSON; a template that does not render to JSON is reported
at startup and the built-in one is used instead.

Pure but for load_template, which reads the template file.
"""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from datetime import datetime

from nodeagent import __version__
from nodeagent.clock import iso_seconds, utcnow
from nodeagent.lifecycle import held_seconds
from nodeagent.notices import NoticeKind
from nodeagent.state import NoticeRecord
from nodeagent.timefmt import parse_optional_rfc3339

KIND_TEXT = {
    "spot-itn": "spot interruption notice",
    "rebalance": "rebalance recommendation",
    "scheduled": "scheduled maintenance event",
    "asg": "ASG termination",
}

# ASG_LIFECYCLE_HOOK steps that went well -> the headline of their "lifecycle" message
LIFECYCLE_HEADLINES = {
    "LifecycleCompleted": "Lifecycle action completed",
    "LifecycleHeartbeat": "Lifecycle heartbeat",
}

JSON_TEMPLATE = """{
  "source": "nodeagent",
  "event": "${event}",
  "node": "${node}",
  "kind": "${kind}",
  "notice_id": "${notice_id}",
  "action": "${action}",
  "deadline": "${deadline}",
  "deadline_in_s": ${deadline_in_s},
  "response": "${response}",
  "phase": "${phase}",
  "outcome": "${outcome}",
  "evicted": ${evicted},
  "forced": ${forced},
  "failed": ${failed},
  "left": ${left},
  "drain_seconds": ${drain_seconds},
  "lifecycle_heartbeats": ${lifecycle_heartbeats},
  "lifecycle_completed_at": "${lifecycle_completed_at}",
  "held_seconds": ${held_seconds},
  "dry_run": ${dry_run},
  "drill": ${drill},
  "summary": "${summary}",
  "time": "${time}",
  "version": "${version}"
}
"""
SLACK_TEMPLATE = '{"text": "${icon} ${drill_prefix}*${headline}* on `${node}`: ${summary}"}\n'
DEFAULT_TEMPLATES = {"json": JSON_TEMPLATE, "slack": SLACK_TEMPLATE}


class TemplateError(ValueError):
    pass


def message_fields(
    event: str,
    record,
    node: str,
    *,
    drill: bool,
    dry_run: bool,
    now: datetime | None = None,
    message: str = "",
    reason: str = "",
) -> dict[str, object]:
    """The template fields for one message about one notice record. Pure."""
    now = now or utcnow()
    deadline = parse_optional_rfc3339(record.deadline)
    started, finished = (
        parse_optional_rfc3339(record.drain_started),
        parse_optional_rfc3339(record.drain_finished),
    )
    deadline_in = None if deadline is None else max(0, round((deadline - now).total_seconds()))
    drain_seconds = None if not (started and finished) else round((finished - started).total_seconds(), 3)
    kind_text = KIND_TEXT.get(record.kind, record.kind)
    if event == "notice":
        headline = kind_text[:1].upper() + kind_text[1:]
        when = f"deadline {iso_seconds(deadline)} (in {deadline_in}s)" if deadline else "no deadline"
        summary = f"{record.action}, {when}; response: {record.response}"
        if record.outcome:
            summary += f" ({record.outcome})"
        icon = ":warning:"
    elif event == "finished":
        ok = (
            not record.left
            and not record.failed
            and not record.outcome.startswith(("failed", "drain incomplete"))
        )
        if record.response == "drain":
            headline = "Drained" if ok else "Drain incomplete"
        else:
            headline = "Cordoned" if ok else "Response failed"
        summary = f"{kind_text} {record.id}: {record.outcome or 'done'}"
        icon = ":white_check_mark:" if ok else ":x:"
    elif event == "lifecycle":
        headline = LIFECYCLE_HEADLINES.get(reason, "Lifecycle action failed")
        summary = f"{kind_text} {record.id}: {message or record.lifecycle_outcome}"
        icon = ":white_check_mark:" if reason in LIFECYCLE_HEADLINES else ":x:"
    else:
        headline = "Notice cancelled"
        summary = f"{kind_text} {record.id}: {record.outcome or 'cancelled'}"
        icon = ":information_source:"
    if dry_run and "dry run" not in summary:
        summary += " [dry run]"
    return {
        "event": event,
        "node": node,
        "kind": record.kind,
        "kind_text": kind_text,
        "notice_id": record.id,
        "action": record.action,
        "deadline": record.deadline,
        "deadline_in_s": deadline_in,
        "response": record.response,
        "phase": record.phase,
        "outcome": record.outcome,
        "evicted": record.evicted,
        "forced": record.forced,
        "failed": record.failed,
        "left": len(record.left),
        "left_pods": ", ".join(record.left),
        "drain_seconds": drain_seconds,
        "lifecycle_heartbeats": record.lifecycle_heartbeats,
        "lifecycle_completed_at": record.lifecycle_completed_at or "",
        "held_seconds": _held(record),
        "dry_run": dry_run,
        "drill": drill,
        "drill_prefix": "[drill] " if drill else "",
        "headline": headline,
        "icon": icon,
        "summary": summary,
        "time": iso_seconds(now),
        "version": __version__,
    }


def slack_escape(text: str) -> str:
    """Slack reads `&`, `<` and `>` as markup (`<!channel>`, `<https://...|click>`); escaped as
    Slack asks, a value from IMDS or the API is shown as text, never as a mention or a link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_fields(fields: Mapping[str, object]) -> dict[str, object]:
    """Every string field escaped for Slack (the template's own markup is left alone). Pure."""
    return {key: slack_escape(value) if isinstance(value, str) else value for key, value in fields.items()}


def _held(record) -> float | None:
    held = held_seconds(record)
    return None if held is None else round(held, 3)


def _json_value(value: object) -> str:
    if isinstance(value, str):
        return json.dumps(value)[1:-1]  # escaped, without the quotes: goes inside "..."
    return json.dumps(value)


def render(template_text: str, fields: Mapping[str, object]) -> bytes:
    """Substitute and check that the result is JSON. Raises TemplateError."""
    try:
        text = string.Template(template_text).substitute({k: _json_value(v) for k, v in fields.items()})
    except KeyError as error:
        raise TemplateError(
            f"unknown field ${{{error.args[0]}}} (known: {', '.join(sorted(fields))})"
        ) from None
    except ValueError as error:
        raise TemplateError(f"bad placeholder: {error}") from None
    try:
        json.loads(text)
    except ValueError as error:
        raise TemplateError(f"does not render to JSON: {error}") from None
    return text.encode("utf-8")


def load_template(fmt: str, path: str) -> tuple[str, str | None]:
    """(template text, problem). A missing or bad file falls back to the built-in template."""
    default = DEFAULT_TEMPLATES[fmt]
    if not path:
        return default, None
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        return (
            default,
            f"WEBHOOK_TEMPLATE {path}: cannot read it ({reason}); using the built-in {fmt} template",
        )

    sample = NoticeRecord(
        id="spot-itn-sample",
        kind=NoticeKind.SPOT_ITN,
        action="terminate",
        deadline="2025-01-01T00:02:00Z",
        first_seen="2025-01-01T00:00:00Z",
        response="drain",
    )
    try:
        render(text, message_fields("notice", sample, "node", drill=False, dry_run=False))
    except TemplateError as error:
        return default, f"WEBHOOK_TEMPLATE {path}: {error}; using the built-in {fmt} template"
    return text, None
