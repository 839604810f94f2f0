"""Reporters: Kubernetes Events, webhook, textfile metrics. They never raise into the agent.

Each reporter implements ports.Reporter. Network I/O (events, webhook) runs on one background
thread per reporter, so a slow receiver or API never holds up the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from nodeagent.config import Settings
from nodeagent.ports import KubeLink, Reporter, Responder
from nodeagent.report.events import EventsReporter
from nodeagent.report.metrics import MetricsReporter
from nodeagent.report.webhook import WebhookReporter, default_node_name, webhook_config

R = TypeVar("R")


def build_reporters(
    settings: Settings,
    responder: Responder,
    *,
    kube: KubeLink | None = None,
    drill: bool = False,
    running: Sequence[Reporter] = (),
) -> list[Reporter]:
    """The reporters the config asks for. `kube`: the responder's link to the Kubernetes API, when
    it has one (Events need it; the metrics count its failed requests). `drill` marks messages as a
    rehearsal.

    `running` (a SIGHUP reload): the reporters in use. Each is kept when what it was built from is
    unchanged, so metrics counters, Events aggregates and webhook messages still being retried
    survive the reload; kept reporters see the new settings. The caller closes whatever is not
    returned.
    """
    reporters: list[Reporter] = []
    previous_metrics = _running(running, MetricsReporter)
    metrics = None
    if settings.metrics_textfile:
        if previous_metrics is not None and previous_metrics.path == settings.metrics_textfile:
            metrics = previous_metrics
        else:
            metrics = MetricsReporter(settings.metrics_textfile)
        reporters.append(metrics)
    if kube is not None:
        kube.listen_api_failures(metrics.api_error if metrics is not None else _nothing)
    if settings.events and kube is not None:
        events = _running(running, EventsReporter)
        if events is None or events.drill != drill:
            events = EventsReporter(settings, kube, drill=drill)
        events.settings = settings
        reporters.append(events)
    if settings.webhook_url:
        webhook = _running(running, WebhookReporter)
        if (
            webhook is None
            or webhook.drill != drill
            or webhook.config != webhook_config(settings)
            or metrics is not previous_metrics
        ):  # its on_result feeds the metrics reporter
            webhook = WebhookReporter(
                settings,
                default_node_name(responder, settings),
                drill=drill,
                on_result=metrics.webhook_result if metrics is not None else _ignore_result,
                close_timeout_s=30.0 if drill else 5.0,
            )
        webhook.settings = settings
        reporters.append(webhook)
    return reporters


def _running(running: Sequence[Reporter], kind: type[R]) -> R | None:
    """The running reporter of that kind, if there is one."""
    return next((r for r in running if isinstance(r, kind)), None)


def _nothing() -> None:
    pass


def _ignore_result(delivered: bool) -> None:
    pass


def flush_reporters(reporters: Sequence[Reporter], timeout_s: float) -> None:
    """Wait for queued events and webhook messages (drill: before it prints its summary)."""
    for reporter in reporters:
        reporter.flush(timeout_s)
