"""Webhook: a JSON or Slack message at the notice and at the end of the response.

Formats: `json` (a generic object) and `slack` (an incoming-webhook `{"text": ...}`, every
field's `&`, `<` and `>` escaped so that no value can mention a channel or show a link). Each has a
built-in template that WEBHOOK_TEMPLATE can replace with a file. Templates are `string.Template`
text (`${field}` placeholders, so JSON braces need no escaping): a string field is inserted
JSON-escaped without quotes (put it inside a JSON string), a number, boolean or null field as a
JSON literal. The rendered body must be JSON; a template that does not render to JSON is reported
at startup and the built-in one is used instead.

Delivery runs on a background thread: a timeout per attempt, and a deadline for the whole attempt
(connect + read timeout, never past the give-up time) that a server trickling its answer cannot
stretch; retries with exponential backoff on connection errors, timeouts, 408/425/429 and 5xx
until the notice's deadline (at least `min_window_s`), no retry on other answers. `requests`
honours HTTPS_PROXY/HTTP_PROXY/NO_PROXY.

Secrecy: the URL and the WEBHOOK_HEADERS values are never logged and never put in exception
messages that we log; logs say e.g. "webhook failed: HTTP 500 from <redacted>".
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import socket
import string
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable
from urllib.parse import urlsplit

import requests

from nodeagent import __version__
from nodeagent.clock import iso_seconds, utcnow
from nodeagent.config import Settings
from nodeagent.http_deadline import DEADLINES, deadline_session, too_slow
from nodeagent.lifecycle import held_seconds
from nodeagent.notices import NoticeKind
from nodeagent.ports import Responder
from nodeagent.report.worker import Worker, WorkerReporter
from nodeagent.retry import Backoff, Failure, retry
from nodeagent.state import NoticeRecord
from nodeagent.timefmt import parse_optional_rfc3339

log = logging.getLogger("nodeagent.report.webhook")

REDACTED = "<redacted>"
RETRY_STATUSES = frozenset({408, 425, 429})
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


# ------------------------------------------------------------------ pure: headers, fields, render


def parse_headers(text: str) -> tuple[dict[str, str], list[str]]:
    """'Name: value; Name2: value2' -> ({name: value}, problems). Problems never quote a value."""
    headers: dict[str, str] = {}
    problems: list[str] = []
    for index, entry in enumerate((e for e in text.split(";") if e.strip()), start=1):
        name, sep, value = entry.partition(":")
        name = name.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name):
            problems.append(f"WEBHOOK_HEADERS entry {index} ignored: expected 'Name: value'")
            continue
        if "\r" in value or "\n" in value:
            problems.append(f"WEBHOOK_HEADERS entry {index} ({name}) ignored: line break in the value")
            continue
        headers[name] = value.strip()
    return headers, problems


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


# ------------------------------------------------------------------ delivery


class Redactor:
    """Removes the URL (and its parts) and header values from any text before it is logged."""

    def __init__(self, url: str, header_values: list[str]):

        parts = urlsplit(url)
        secrets = [url, parts.netloc, parts.path, parts.query, parts.hostname or ""]
        secrets += [v for v in header_values if v]
        # Longest first, so the URL goes as a whole before its pieces; very short pieces ("/")
        # are not secrets and would mangle the text.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text


@dataclass(frozen=True)
class DeliveryPolicy:
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 5.0
    first_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    # Retry at least this long even when the deadline is nearer (the end-of-drain message).
    min_window_s: float = 20.0


def describe_failure(error: BaseException) -> str:
    """A short cause that never includes the exception text (requests puts the URL in it)."""
    if isinstance(error, requests.exceptions.ProxyError):
        return "proxy error"
    if isinstance(error, requests.exceptions.SSLError):
        return "TLS error"
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return "connect timed out"
    if isinstance(error, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection failed"
    return type(error).__name__


@dataclass
class Delivery:
    delivered: bool
    attempts: int
    problem: str = ""


class _AttemptFailed(Exception):
    def __init__(self, problem: str, attempt: int, retryable: bool, retry_after: float | None):
        super().__init__(problem)
        self.attempt = attempt
        self.retryable = retryable
        self.retry_after = retry_after


class WebhookSender:
    def __init__(
        self,
        url: str,
        headers: Mapping[str, str],
        policy: DeliveryPolicy,
        worker: Worker,
        session: requests.Session | None = None,
        sleep: Callable[[float], bool] | None = None,
    ):
        self._url = url
        self._headers = {"Content-Type": "application/json", "User-Agent": f"nodeagent/{__version__}"}
        self._headers.update(headers)
        self.policy = policy
        self.worker = worker
        self._session = session or deadline_session()  # trust_env: the standard proxy variables
        self._sleep = sleep or worker.sleep
        self.redact = Redactor(url, list(headers.values()))

    def __repr__(self) -> str:
        return f"WebhookSender({REDACTED})"

    def send(self, body: bytes, give_up_at: float, what: str) -> Delivery:
        """POST with retries until give_up_at (monotonic). Logs without the URL or header values."""
        backoff = Backoff(self.policy.first_backoff_s, self.policy.max_backoff_s)

        def attempt() -> Delivery:
            number = next(numbers)
            left = give_up_at - time.monotonic()
            timeout = (
                min(self.policy.connect_timeout_s, max(0.5, left)),
                min(self.policy.read_timeout_s, max(0.5, left)),
            )
            # The whole attempt, body included: per-read timeouts alone let a trickle run for ever.
            whole_s = min(sum(timeout), max(0.5, left))
            retry_after: float | None = None
            try:
                with DEADLINES.limit(whole_s) as limit:
                    try:
                        response = self._session.post(
                            self._url,
                            data=body,
                            headers=self._headers,
                            timeout=timeout,
                            allow_redirects=False,
                        )
                    except requests.RequestException:
                        if limit.expired:
                            raise _AttemptFailed(
                                f"{too_slow(round(whole_s, 1))} ({REDACTED})", number, True, None
                            ) from None
                        raise
                status = response.status_code
                response.close()
                if 200 <= status < 300:
                    log.info("webhook delivered (%s, attempt %d)", what, number)
                    return Delivery(True, number)
                problem = f"HTTP {status} from {REDACTED}"
                retryable = status in RETRY_STATUSES or status >= 500
                retry_after = _retry_after(response.headers.get("Retry-After"))
            except _AttemptFailed:
                raise
            except requests.RequestException as error:
                problem = f"{describe_failure(error)} ({REDACTED})"
                retryable = True
            except Exception as error:  # e.g. a malformed URL slipping past config
                problem = describe_failure(error)
                retryable = False
            raise _AttemptFailed(self.redact(problem), number, retryable, retry_after)

        def wait(failure: Failure[Delivery]) -> float:
            assert isinstance(failure.error, _AttemptFailed)
            return min(self.policy.max_backoff_s, max(backoff(failure), failure.error.retry_after or 0.0))

        def retrying(failure: Failure[Delivery]) -> None:
            if failure.attempts == 1:
                log.warning(
                    "webhook attempt 1 failed (%s): %s; retrying with backoff for up to %.0fs",
                    what,
                    failure.error,
                    give_up_at - time.monotonic(),
                )
            else:
                log.debug("webhook attempt %d failed (%s): %s", failure.attempts, what, failure.error)

        def gave_up(failure: Failure[Delivery]) -> Delivery:
            n = failure.attempts
            if failure.interrupted:
                log.error("webhook failed (%s) after %d attempts: %s (shutting down)", what, n, failure.error)
            else:
                log.error(
                    "webhook failed (%s) after %d attempt%s: %s",
                    what,
                    n,
                    "" if n == 1 else "s",
                    failure.error,
                )
            return Delivery(False, n, str(failure.error))

        numbers = itertools.count(1)
        try:
            return retry(
                attempt,
                schedule=wait,
                transient=lambda error: isinstance(error, _AttemptFailed) and error.retryable,
                stop=lambda failure: (
                    self.worker.closing.is_set() or time.monotonic() + failure.wait_s >= give_up_at
                ),
                sleep=self._sleep,  # False: the reporter is shutting down
                before_sleep=retrying,
                gave_up=gave_up,
            )
        except _AttemptFailed as failed:  # an answer no retry can change
            log.error("webhook failed (%s): %s; not retrying", what, failed)
            return Delivery(False, failed.attempt, str(failed))

    def close(self) -> None:
        self._session.close()


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


# ------------------------------------------------------------------ the reporter


@dataclass(frozen=True)
class WebhookConfig:
    """What a WebhookReporter is built from: a reload keeps the reporter while this is unchanged."""

    url: str = field(repr=False)
    format: str
    template: str  # the text in effect (an edited file counts as a change)
    headers: str = field(repr=False)
    node_name: str


def webhook_config(settings, template: str | None = None) -> WebhookConfig:
    """template: the text already loaded, if it was; otherwise the file is read now."""
    if template is None:
        template = load_template(settings.webhook_format, settings.webhook_template)[0]
    return WebhookConfig(
        settings.webhook_url, settings.webhook_format, template, settings.webhook_headers, settings.node_name
    )


class WebhookReporter(WorkerReporter):
    """Reporter: a message at the notice, at the end of the response, and on cancellation."""

    def __init__(
        self,
        settings,
        node_name: Callable[[], str],
        *,
        drill: bool = False,
        on_result: Callable[[bool], None] = lambda delivered: None,
        policy: DeliveryPolicy = DeliveryPolicy(),
        close_timeout_s: float = 5.0,
    ):
        super().__init__("webhook", close_timeout_s)
        self.settings = settings
        self.node_name = node_name
        self.drill = drill
        self.on_result = on_result
        self.format = settings.webhook_format
        self.template, problem = load_template(settings.webhook_format, settings.webhook_template)
        if problem:
            log.error("%s", problem)
        self.config = webhook_config(settings, self.template)
        headers, header_problems = parse_headers(settings.webhook_headers)
        for text in header_problems:
            log.error("%s", text)
        self.sender = WebhookSender(settings.webhook_url, headers, policy, self.worker)
        self.deliveries: list[Delivery] = []
        log.info(
            "webhook: %s format%s, %d extra header%s",
            self.format,
            f", template {settings.webhook_template}" if settings.webhook_template and not problem else "",
            len(headers),
            "" if len(headers) == 1 else "s",
        )

    def __repr__(self) -> str:
        return f"WebhookReporter({self.format}, {REDACTED})"

    def _queue(self, event: str, record, message: str = "", reason: str = "") -> None:
        fields = message_fields(
            event,
            record,
            self.node_name(),
            drill=self.drill,
            dry_run=self.settings.dry_run,
            message=message,
            reason=reason,
        )
        if self.format == "slack":
            fields = slack_fields(fields)
        try:
            body = render(self.template, fields)
        except TemplateError as error:  # checked at startup; only odd values get here
            log.error("webhook template: %s; using the built-in one", error)
            body = render(DEFAULT_TEMPLATES[self.format], fields)
        deadline = parse_optional_rfc3339(record.deadline)
        to_deadline = 0.0 if deadline is None else (deadline - utcnow()).total_seconds()
        give_up_at = time.monotonic() + max(to_deadline, self.sender.policy.min_window_s)
        what = f"{event} {record.id}"

        def job() -> None:
            result = self.sender.send(body, give_up_at, what)
            self.deliveries.append(result)
            self.on_result(result.delivered)

        self.worker.submit(job)

    def notice_received(self, notice, record, plan) -> None:
        self._queue("notice", record)

    def step(self, record, reason: str, message: str) -> None:
        if reason.startswith("Lifecycle"):  # ASG_LIFECYCLE_HOOK: heartbeats and the release
            self._queue("lifecycle", record, message, reason)

    def finished(self, record) -> None:
        self._queue("finished", record)

    def cancelled(self, record) -> None:
        self._queue("cancelled", record)

    def close(self) -> None:
        super().close()
        self.sender.close()


def default_node_name(responder: Responder, settings: Settings) -> Callable[[], str]:
    """The node's name once the responder knows it; NODE_NAME or the host name before that."""

    def name() -> str:
        return responder.node_name() or settings.node_name or socket.gethostname()

    return name
