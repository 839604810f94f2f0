"""Reporters: Kubernetes Events, webhook, textfile metrics. They never raise into the agent.

Each reporter implements agent.Reporter. Network I/O (events, webhook) runs on one background
thread per reporter, so a slow receiver or API never holds up the loop.
"""
from __future__ import annotations

from typing import List, Sequence


def build_reporters(settings, responder, *, drill: bool = False, running: Sequence[object] = ()) -> List[object]:
    """The reporters the config asks for. `drill` marks messages as a rehearsal.

    `running` (a SIGHUP reload): the reporters in use. The metrics and Events reporters are kept
    when their own settings did not change, so counters and per-notice aggregates survive; they
    see the new settings. The webhook reporter is always built afresh, so an edited template
    file or URL takes effect. The caller closes whatever is not returned.
    """
    kept = {getattr(reporter, "config_key", None): reporter for reporter in running}
    reporters: List[object] = []
    metrics_key = ("metrics", settings.metrics_textfile)
    metrics = kept.get(metrics_key) if settings.metrics_textfile else None
    if settings.metrics_textfile and metrics is None:
        from nodeagent.report.metrics import MetricsReporter

        metrics = MetricsReporter(settings.metrics_textfile)
        metrics.config_key = metrics_key
    if metrics is not None:
        if hasattr(responder, "on_api_failure"):
            responder.on_api_failure = metrics.api_error
        reporters.append(metrics)
    elif hasattr(responder, "on_api_failure"):
        responder.on_api_failure = lambda: None
    if settings.events and hasattr(responder, "api"):
        events = kept.get(("events", drill))
        if events is None:
            from nodeagent.report.events import EventsReporter

            events = EventsReporter(settings, responder, drill=drill)
            events.config_key = ("events", drill)
        events.settings = settings
        reporters.append(events)
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
