"""Reporters: Kubernetes Events, webhook, textfile metrics. They never raise into the agent.

Each reporter implements agent.Reporter. Network I/O (events, webhook) runs on one background
thread per reporter, so a slow receiver or API never holds up the loop.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def build_reporters(
    settings, responder, *, drill: bool = False, running: Sequence[object] = ()
) -> list[object]:
    """The reporters the config asks for. `drill` marks messages as a rehearsal.

    `running` (a SIGHUP reload): the reporters in use. Each is kept when what it was built from is
    unchanged, so metrics counters, Events aggregates and webhook messages still being retried
    survive the reload; kept reporters see the new settings. The caller closes whatever is not
    returned.
    """
    reporters: list[object] = []
    previous_metrics = _running(running, "nodeagent.report.metrics", "MetricsReporter")
    metrics = None
    if settings.metrics_textfile:
        from nodeagent.report.metrics import MetricsReporter

        if previous_metrics is not None and previous_metrics.path == settings.metrics_textfile:
            metrics = previous_metrics
        else:
            metrics = MetricsReporter(settings.metrics_textfile)
        reporters.append(metrics)
    if hasattr(responder, "on_api_failure"):
        responder.on_api_failure = metrics.api_error if metrics is not None else (lambda: None)
    if settings.events and hasattr(responder, "api"):
        from nodeagent.report.events import EventsReporter

        events = _running(running, "nodeagent.report.events", "EventsReporter")
        if events is None or events.drill != drill:
            events = EventsReporter(settings, responder, drill=drill)
        events.settings = settings
        reporters.append(events)
    if settings.webhook_url:
        from nodeagent.report.webhook import WebhookReporter, default_node_name, webhook_config

        webhook = _running(running, "nodeagent.report.webhook", "WebhookReporter")
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
                on_result=metrics.webhook_result if metrics is not None else (lambda delivered: None),
                close_timeout_s=30.0 if drill else 5.0,
            )
        webhook.settings = settings
        reporters.append(webhook)
    return reporters


def _running(running: Sequence[object], module: str, name: str):
    """The running reporter of that class, if any (its module is loaded only if one was built)."""
    loaded = sys.modules.get(module)
    cls = getattr(loaded, name, None) if loaded is not None else None
    return next((r for r in running if cls is not None and isinstance(r, cls)), None)


def flush_reporters(reporters: list[object], timeout_s: float) -> None:
    """Wait for queued events and webhook messages (drill: before it prints its summary)."""
    for reporter in reporters:
        flush = getattr(reporter, "flush", None)
        if flush is not None:
            flush(timeout_s)
