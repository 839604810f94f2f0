"""Pure parsers: IMDS response bodies -> Notice. No I/O here.

Every parser takes the body as bytes (or str) plus `now` (an aware UTC datetime, passed in so
that parsing stays pure) and returns a Notice, None when the body means "nothing pending",
or raises NoticeParseError for malformed input.

Contract (checked by property tests): for *any* input the parsers either return or raise
NoticeParseError -- never another exception. Notice ids are derived from the body only (never
from `now`), so the same notice gets the same id across polls and restarts, and every id is a
valid Kubernetes label value (the agent stores it in a node label/annotation).

Paths are relative to /latest/meta-data/ (the form ImdsClient.get takes).

Why one module of this size: it has one job, parsing, and its parts share the contract above and
the helpers that keep it (text and JSON decoding, required fields, times, ids as label values); a
parser per file would copy those or import them back from here.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Union

from nodeagent.timefmt import parse_rfc3339_utc, parse_scheduled_time


class NoticeKind(str, enum.Enum):
    SPOT_ITN = "spot-itn"
    REBALANCE = "rebalance"
    SCHEDULED = "scheduled"
    ASG = "asg"

    def __str__(self) -> str:  # the value in messages, labels and the state file, on every Python
        return self.value


class NoticeParseError(ValueError):
    """A body that does not match the documented IMDS format."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Notice:
    kind: NoticeKind
    # Stable for the same notice across polls and restarts (derived from the body, never from now).
    id: str
    # Aware UTC datetime. For kinds without a time of their own, now + a configured window is
    # applied later by the agent; parsers set the time IMDS gives (may be in the past).
    deadline: datetime
    # terminate|stop|hibernate (spot-itn), rebalance, the scheduled event Code, or the ASG state.
    action: str
    raw: str
    # Scheduled events: active|completed|canceled. Others: "active".
    state: str = "active"
    # Scheduled events: the end of the maintenance window (NotAfter), when IMDS gives one.
    not_after: datetime | None = None
    # Something odd about the body that was tolerated, for the agent to log once (pure: no log here).
    note: str = ""


@dataclass(frozen=True)
class Parsed:
    """What one IMDS path's body holds: the notices, and the entries that were skipped and why."""

    notices: tuple[Notice, ...] = ()
    problems: tuple[str, ...] = ()


# --- IMDS paths (relative to /latest/meta-data/) ---------------------------------------------

SPOT_ACTION_PATH = "spot/instance-action"
REBALANCE_PATH = "events/recommendations/rebalance"
# Real IMDS answers 200 with "[]" here when nothing is scheduled (NTH treats any non-2xx on this
# path as an error and polls it on every node, which only works if "[]" is the normal answer).
# A 404 is still handled gracefully by callers: ImdsClient.get returns None.
SCHEDULED_PATH = "events/maintenance/scheduled"
ASG_PATH = "autoscaling/target-lifecycle-state"

INSTANCE_ID_PATH = "instance-id"
INSTANCE_TYPE_PATH = "instance-type"
INSTANCE_LIFE_CYCLE_PATH = "instance-life-cycle"
LOCAL_HOSTNAME_PATH = "local-hostname"
AVAILABILITY_ZONE_PATH = "placement/availability-zone"
REGION_PATH = "placement/region"

SPOT_ACTIONS = frozenset({"terminate", "stop", "hibernate"})
SCHEDULED_CODES = frozenset(
    {"system-reboot", "instance-reboot", "system-maintenance", "instance-retirement", "instance-stop"}
)
SCHEDULED_STATES = frozenset({"active", "completed", "canceled"})
# A Code outside the documented five is kept when it looks like one (AWS may add codes); anything
# else is replaced: the Code goes into node annotations, `nodeagent status` and webhook messages,
# and must not carry terminal escapes or Slack markup there.
SCHEDULED_CODE_RE = re.compile(r"[a-z0-9-]{1,64}", re.ASCII)
UNRECOGNISED_CODE = "unrecognised-code"

ASG_TERMINATED = "Terminated"
ASG_NOTICE_ID = "asg-terminated"
# Target lifecycle states that take the instance out of service: Terminated, and a warm pool's
# stopped, hibernated or terminated instances (docs/notices.md).
ASG_OUT_OF_SERVICE = {
    ASG_TERMINATED: ASG_NOTICE_ID,
    "Warmed:Terminated": "asg-warmed-terminated",
    "Warmed:Stopped": "asg-warmed-stopped",
    "Warmed:Hibernated": "asg-warmed-hibernated",
}
# States that need nothing from us.
ASG_IN_SERVICE = frozenset(
    {
        "InService",
        "Warmed:Running",
        "Standby",
        "Detached",
        "Pending",
        "Pending:Wait",
        "Pending:Proceed",
        "Warmed:Pending",
    }
)
# Longest ASG state text we accept; real ones are short ("Warmed:Hibernated" is 17 chars).
ASG_STATE_MAX_LEN = 64

# Bodies come from ImdsClient capped at 64 KiB; this is a second, generous guard so the parsers
# stay cheap for any caller.
MAX_BODY_CHARS = 1 << 20

LABEL_VALUE_MAX_LEN = 63
_LABEL_VALUE_RE = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")

Body = Union[bytes, bytearray, memoryview, str]


def is_valid_label_value(value: str) -> bool:
    """True if `value` is a valid non-empty Kubernetes label value."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= LABEL_VALUE_MAX_LEN
        and _LABEL_VALUE_RE.fullmatch(value) is not None
    )


# --- timestamps -------------------------------------------------------------------------------


def _compact_utc(moment: datetime) -> str:
    # Manual formatting: strftime("%Y") does not zero-pad years < 1000 on glibc.
    return (
        f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"
        f"T{moment.hour:02d}{moment.minute:02d}{moment.second:02d}Z"
    )


# --- helpers ----------------------------------------------------------------------------------


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _as_text(path: str, body: object) -> str:
    if isinstance(body, (bytes, bytearray, memoryview)):
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise NoticeParseError(
                path, f"body is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
    elif isinstance(body, str):
        text = body
    else:
        raise NoticeParseError(path, f"body must be bytes or str, got {type(body).__name__}")
    if len(text) > MAX_BODY_CHARS:
        raise NoticeParseError(path, f"body is too large ({len(text)} characters)")
    return text


def _load_json(path: str, body: object) -> object:
    text = _as_text(path, body).strip()
    if not text:
        raise NoticeParseError(path, "body is empty")
    try:
        return json.loads(text)
    # RecursionError: deeply nested arrays; ValueError covers JSONDecodeError and huge ints.
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else type(exc).__name__
        raise NoticeParseError(path, f"body is not valid JSON ({reason})") from None


def _require_str(path: str, obj: dict[str, object], key: str, where: str = "") -> str:
    if key not in obj:
        raise NoticeParseError(path, f"missing key {key!r}{where}")
    value = obj[key]
    if not isinstance(value, str):
        raise NoticeParseError(path, f"{key!r}{where} must be a string, got {type(value).__name__}")
    return value


def _aware_utc(now: datetime) -> datetime:
    if not isinstance(now, datetime):
        raise TypeError("now must be a datetime")  # a caller bug, not bad input from IMDS
    if now.tzinfo is None:
        return now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc)


def _time_field(path: str, obj: dict[str, object], key: str) -> datetime:
    value = _require_str(path, obj, key)
    try:
        return parse_rfc3339_utc(value)
    except ValueError as exc:
        raise NoticeParseError(path, f"{key!r}: {exc}") from None


# --- parsers ----------------------------------------------------------------------------------


def parse_spot_action(body: Body, now: datetime) -> Notice:
    """spot/instance-action: {"action": "terminate"|"stop"|"hibernate", "time": RFC 3339}."""
    path = SPOT_ACTION_PATH
    doc = _load_json(path, body)
    if not isinstance(doc, dict):
        raise NoticeParseError(path, f"expected a JSON object, got {type(doc).__name__}")
    action = _require_str(path, doc, "action")
    note = ""
    if action not in SPOT_ACTIONS:
        # The instance is going away whatever the word: failing closed would lose the workloads.
        note = f"unknown spot action {_preview(action)}; handled as terminate"
        action = "terminate"
    deadline = _time_field(path, doc, "time")
    return Notice(
        kind=NoticeKind.SPOT_ITN,
        id=f"spot-itn-{_compact_utc(deadline)}",
        deadline=deadline,
        action=action,
        raw=_as_text(path, body).strip(),
        note=note,
    )


def parse_rebalance(body: Body, now: datetime) -> Notice:
    """events/recommendations/rebalance: {"noticeTime": RFC 3339}."""
    path = REBALANCE_PATH
    doc = _load_json(path, body)
    if not isinstance(doc, dict):
        raise NoticeParseError(path, f"expected a JSON object, got {type(doc).__name__}")
    notice_time = _time_field(path, doc, "noticeTime")
    return Notice(
        kind=NoticeKind.REBALANCE,
        id=f"rebalance-{_compact_utc(notice_time)}",
        deadline=notice_time,
        action="rebalance",
        raw=_as_text(path, body).strip(),
    )


def scheduled_notice_id(event_id: str) -> str:
    """`scheduled-<EventId>`, made into a valid label value deterministically.

    Ids that already fit are kept verbatim (real ones do: "instance-event-" + 17 hex). Anything
    longer or with characters a label cannot hold is sanitised, truncated, and suffixed with a
    hash of the original EventId, so distinct events keep distinct ids.
    """
    candidate = f"scheduled-{event_id}"
    if is_valid_label_value(candidate):
        return candidate
    digest = hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", event_id)
    room = LABEL_VALUE_MAX_LEN - len("scheduled-") - len(digest) - 1
    stem = cleaned[:room].strip("-_.")
    return f"scheduled-{stem}-{digest}" if stem else f"scheduled-{digest}"


def parse_scheduled(body: Body, now: datetime) -> Parsed:
    """events/maintenance/scheduled: a JSON list of events; `[]` means none.

    Each event is parsed on its own: one odd entry never hides the others. An entry without a
    usable EventId or NotBefore, or with an unknown State, is skipped and named in `problems`; one
    without a State is handled as active (with a note); a Code outside the documented five is
    still maintenance on this instance and is kept. Completed and canceled
    events are returned too (state lower-cased) so the agent can end what it started. Duplicate
    EventIds keep the first occurrence. A body that is not a JSON list raises NoticeParseError.
    """
    path = SCHEDULED_PATH
    doc = _load_json(path, body)
    if not isinstance(doc, list):
        raise NoticeParseError(path, f"expected a JSON list, got {type(doc).__name__}")
    notices: list[Notice] = []
    problems: list[str] = []
    seen = set()
    for index, event in enumerate(doc):
        try:
            notice = _scheduled_event(event, index)
        except NoticeParseError as error:
            problems.append(f"{error.reason}; entry skipped")
            continue
        if notice.id in seen:
            continue
        seen.add(notice.id)
        notices.append(notice)
    return Parsed(tuple(notices), tuple(problems))


def _scheduled_event(event: object, index: int) -> Notice:
    path = SCHEDULED_PATH
    where = f" in event #{index}"
    if not isinstance(event, dict):
        raise NoticeParseError(path, f"event #{index} must be a JSON object, got {type(event).__name__}")
    code = _require_str(path, event, "Code", where).strip()
    if not code:
        raise NoticeParseError(path, f"empty 'Code'{where}")
    code, note = scheduled_code(code)
    event_id = _require_str(path, event, "EventId", where)
    if not event_id.strip():
        raise NoticeParseError(path, f"empty 'EventId'{where}")
    if "State" in event:
        state = _require_str(path, event, "State", where).strip().lower()
    else:
        # AWS always sends State; without one, the safe side is to act: a missed maintenance
        # takes the workloads down with the instance, a needless drain only moves them.
        state = "active"
        note = "; ".join(filter(None, [note, "scheduled event has no State; handled as active"]))
    if state == "cancelled":
        state = "canceled"
    if state not in SCHEDULED_STATES:
        raise NoticeParseError(
            path, f"unknown State {_preview(state)}{where} (expected one of {sorted(SCHEDULED_STATES)})"
        )
    not_before = _scheduled_time_field(event, "NotBefore", where)
    assert not_before is not None
    try:
        not_after = _scheduled_time_field(event, "NotAfter", where, required=False)
    except NoticeParseError:
        not_after = None  # only bounds an open window; DRAIN_WINDOW stands in for it
    return Notice(
        kind=NoticeKind.SCHEDULED,
        id=scheduled_notice_id(event_id),
        deadline=not_before,
        action=code,
        raw=json.dumps(event, sort_keys=True, ensure_ascii=True),
        state=state,
        not_after=not_after,
        note=note,
    )


def scheduled_code(code: str) -> tuple[str, str]:
    """(the Code to act on and show, a note to log once or ""). A documented Code is kept; another
    that matches SCHEDULED_CODE_RE is kept with a note; anything else becomes UNRECOGNISED_CODE,
    and the note does not quote it (it may hold terminal escapes or chat markup)."""
    if code in SCHEDULED_CODES:
        return code, ""
    if SCHEDULED_CODE_RE.fullmatch(code):
        return (
            code,
            f"scheduled event Code {code!r} is not one of the documented codes; handled as maintenance",
        )
    return UNRECOGNISED_CODE, (
        f"scheduled event Code of {len(code)} characters is not of the form [a-z0-9-]{{1,64}} (not shown); "
        f"shown as {UNRECOGNISED_CODE!r} and handled as maintenance"
    )


def _scheduled_time_field(
    event: dict[str, object], key: str, where: str, required: bool = True
) -> datetime | None:
    if key not in event and not required:
        return None
    text = _require_str(SCHEDULED_PATH, event, key, where)
    try:
        return parse_scheduled_time(text)
    except ValueError as exc:
        raise NoticeParseError(SCHEDULED_PATH, f"{key!r}{where}: {exc}") from None


_ASG_STATE_RE = re.compile(r"[A-Za-z]+(?::[A-Za-z]+)*", re.ASCII)


def parse_asg_state(body: Body, now: datetime) -> Notice | None:
    """autoscaling/target-lifecycle-state: plain text such as InService or Terminated.

    A state that takes the instance out of service (Terminated, Warmed:Stopped,
    Warmed:Hibernated, Warmed:Terminated) is a notice with a constant id per state; its deadline
    is `now` (the agent applies its own window). Anything else well-formed is None.
    """
    path = ASG_PATH
    text = _as_text(path, body).strip()
    if not text:
        raise NoticeParseError(path, "empty lifecycle state")
    if len(text) > ASG_STATE_MAX_LEN:
        raise NoticeParseError(path, f"lifecycle state too long ({len(text)} characters)")
    if _ASG_STATE_RE.fullmatch(text) is None:
        raise NoticeParseError(path, f"malformed lifecycle state {_preview(text)}")
    notice_id = ASG_OUT_OF_SERVICE.get(text)
    if notice_id is None:
        return None
    return Notice(
        kind=NoticeKind.ASG,
        id=notice_id,
        deadline=_aware_utc(now),
        action=text,
        raw=text,
    )


# --- the notice sources: one table for the poller and the parsers -----------------------------


def _one(notice: Notice | None) -> Parsed:
    return Parsed((notice,) if notice is not None else ())


def _spot_source(body: Body, now: datetime) -> Parsed:
    return _one(parse_spot_action(body, now))


def _rebalance_source(body: Body, now: datetime) -> Parsed:
    return _one(parse_rebalance(body, now))


def _asg_source(body: Body, now: datetime) -> Parsed:
    notice = parse_asg_state(body, now)
    if notice is None:
        state = _as_text(ASG_PATH, body).strip()
        if state not in ASG_IN_SERVICE:
            return Parsed((), (f"unknown lifecycle state {_preview(state)}; no action",))
    return _one(notice)


@dataclass(frozen=True)
class NoticeSource:
    kind: NoticeKind
    path: str  # relative to /latest/meta-data/
    parse: Callable[[Body, datetime], Parsed]


# Most urgent first: a spot interruption gives two minutes, an ASG termination without a hook
# seconds; a rebalance is advice and scheduled maintenance is announced days ahead.
SOURCES: tuple[NoticeSource, ...] = (
    NoticeSource(NoticeKind.SPOT_ITN, SPOT_ACTION_PATH, _spot_source),
    NoticeSource(NoticeKind.ASG, ASG_PATH, _asg_source),
    NoticeSource(NoticeKind.REBALANCE, REBALANCE_PATH, _rebalance_source),
    NoticeSource(NoticeKind.SCHEDULED, SCHEDULED_PATH, parse_scheduled),
)
SOURCES_BY_KIND: dict[str, NoticeSource] = {source.kind.value: source for source in SOURCES}
