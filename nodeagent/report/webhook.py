"""Webhook: a JSON or Slack message at the notice, at the end of the response, on cancellation and
at ASG_LIFECYCLE_HOOK steps.

The reporter builds each message (webhook_message.py) when the agent reports, and hands it to its
worker thread to deliver (webhook_delivery.py), retrying until the notice's deadline (at least
DeliveryPolicy.min_window_s). A reload keeps the reporter while its WebhookConfig is unchanged.
"""

from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

from nodeagent.clock import utcnow
from nodeagent.config import Settings
from nodeagent.ports import Responder
from nodeagent.report.webhook_delivery import REDACTED, DeliveryPolicy, WebhookSender, parse_headers
from nodeagent.report.webhook_message import (
    DEFAULT_TEMPLATES,
    TemplateError,
    load_template,
    message_fields,
    render,
    slack_fields,
)
from nodeagent.report.worker import WorkerReporter
from nodeagent.timefmt import parse_optional_rfc3339

log = logging.getLogger("nodeagent.report.webhook")

DEFAULT_POLICY = DeliveryPolicy()  # frozen: one shared default is safe


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
        policy: DeliveryPolicy = DEFAULT_POLICY,
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
            self.on_result(self.sender.send(body, give_up_at, what).delivered)

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
