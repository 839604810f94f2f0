"""Reporters: Kubernetes Events, webhook, textfile metrics. They never raise into the agent.

Each reporter implements agent.Reporter. Network I/O (events, webhook) runs on one background
thread per reporter, so a slow receiver or API never holds up the loop.
"""
from __future__ import annotations

from typing import List


def build_reporters(settings, responder, *, drill: bool = False) -> List[object]:
    """The reporters the config asks for. `drill` marks messages as a rehearsal."""
    reporters: List[object] = []
    metrics = None
    if settings.metrics_textfile:
        from nodeagent.report.metrics import MetricsReporter

        metrics = MetricsReporter(settings.metrics_textfile)
        if hasattr(responder, "on_api_failure"):
            responder.on_api_failure = metrics.api_error
        reporters.append(metrics)
    if settings.events and hasattr(responder, "api"):
        from nodeagent.report.events import EventsReporter

        reporters.append(EventsReporter(settings, responder, drill=drill))
    if settings.webhook_url:
        from nodeagent.report.webhook import WebhookReporter, default_node_name

        reporters.append(WebhookReporter(
            settings, default_node_name(responder, settings), drill=drill,
            on_result=metrics.webhook_result if metrics is not None else (lambda delivered: None),
            close_timeout_s=30.0 if drill else 5.0,
        ))
    return reporters


def flush_reporters(reporters: List[object], timeout_s: float) -> None:
    """Wait for queued events and webhook messages (drill: before it prints its summary)."""
    for reporter in reporters:
        flush = getattr(reporter, "flush", None)
        if flush is not None:
            flush(timeout_s)
