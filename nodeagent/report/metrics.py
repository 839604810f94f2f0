"""Metrics in the node_exporter textfile format, written to METRICS_TEXTFILE. No listening port.

The file is written atomically (a temporary file in the same directory, then rename), so
node_exporter never reads half a file. It is rewritten when something changes, and while idle at
most every `idle_rewrite_s` so that `nodeagent_last_poll_timestamp_seconds` stays useful for an
alert such as `time() - nodeagent_last_poll_timestamp_seconds > 60`.

Counters count from the start of the process (Prometheus' rate() and increase() handle resets).
`render_textfile` is pure; MetricsReporter does the bookkeeping and the I/O.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from nodeagent import __version__
from nodeagent.atomic_file import replace_file
from nodeagent.lifecycle import held_seconds
from nodeagent.log_once import LogOnce
from nodeagent.timefmt import parse_rfc3339_utc

log = logging.getLogger("nodeagent.report.metrics")

KINDS = ("spot-itn", "rebalance", "scheduled", "asg")
IDLE_REWRITE_S = 15.0
# Step reasons of the lifecycle hook -> (call, result) of nodeagent_asg_lifecycle_calls_total
LIFECYCLE_CALLS = {
    "LifecycleHeartbeat": ("heartbeat", "ok"),
    "LifecycleCompleted": ("complete", "ok"),
    "LifecycleFailed": ("complete", "failed"),
    "LifecycleHeartbeatFailed": ("heartbeat", "failed"),
}


@dataclass
class MetricsState:
    start_time: float
    notices: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in KINDS})
    notices_cancelled: int = 0
    drains: dict[str, int] = field(default_factory=lambda: {"finished": 0, "failed": 0})
    draining: int = 0
    last_drain_seconds: float | None = None
    pods_evicted: int = 0
    pods_forced: int = 0
    pods_failed: int = 0
    pods_left: int = 0
    imds_errors: int = 0
    api_errors: int = 0
    last_poll: float | None = None
    last_poll_ok: bool | None = None
    webhook: dict[str, int] = field(default_factory=lambda: {"delivered": 0, "failed": 0})
    # ASG_LIFECYCLE_HOOK: calls that ended, by call and result; how long the last hold lasted
    lifecycle: dict[tuple[str, str], int] = field(default_factory=dict)
    last_lifecycle_held_seconds: float | None = None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def render_textfile(state: MetricsState, version: str = __version__, python: str | None = None) -> str:
    """The whole file. Pure."""
    python = python or sys.version.split()[0]
    families: list[tuple[str, str, str, list[tuple[dict[str, str], float]]]] = [
        (
            "nodeagent_build_info",
            "gauge",
            "Always 1; the labels say which nodeagent and Python run.",
            [({"version": version, "python": python}, 1)],
        ),
        (
            "nodeagent_start_time_seconds",
            "gauge",
            "When the agent started (Unix time).",
            [({}, state.start_time)],
        ),
        (
            "nodeagent_notices_total",
            "counter",
            "Notices seen, by kind.",
            [({"kind": kind}, count) for kind, count in state.notices.items()],
        ),
        (
            "nodeagent_notices_cancelled_total",
            "counter",
            "Notices withdrawn or cancelled.",
            [({}, state.notices_cancelled)],
        ),
        (
            "nodeagent_drains_total",
            "counter",
            "Drains that ended, by result (failed: pods left or failed).",
            [({"result": result}, count) for result, count in state.drains.items()],
        ),
        ("nodeagent_draining", "gauge", "1 while a drain is running.", [({}, state.draining)]),
        (
            "nodeagent_pods_evicted_total",
            "counter",
            "Pods evicted (dry-run evictions included).",
            [({}, state.pods_evicted)],
        ),
        (
            "nodeagent_pods_forced_total",
            "counter",
            "PDB-blocked pods deleted at their last safe moment.",
            [({}, state.pods_forced)],
        ),
        (
            "nodeagent_pods_failed_total",
            "counter",
            "Pods that could not be evicted (e.g. 403).",
            [({}, state.pods_failed)],
        ),
        (
            "nodeagent_pods_left_total",
            "counter",
            "Pods still on the node at the deadline.",
            [({}, state.pods_left)],
        ),
        ("nodeagent_imds_errors_total", "counter", "IMDS polls that failed.", [({}, state.imds_errors)]),
        (
            "nodeagent_api_errors_total",
            "counter",
            "Kubernetes API requests that failed "
            "(404, 409, PDB 429 and the taint 403 are normal work, not counted).",
            [({}, state.api_errors)],
        ),
        (
            "nodeagent_webhook_deliveries_total",
            "counter",
            "Webhook messages, by result (after retries).",
            [({"result": result}, count) for result, count in state.webhook.items()],
        ),
    ]
    if state.lifecycle:
        families.append(
            (
                "nodeagent_asg_lifecycle_calls_total",
                "counter",
                "Auto Scaling lifecycle-hook calls that ended (after retries), by call and result.",
                [
                    ({"call": call, "result": result}, count)
                    for (call, result), count in sorted(state.lifecycle.items())
                ],
            )
        )
    if state.last_lifecycle_held_seconds is not None:
        families.append(
            (
                "nodeagent_asg_lifecycle_held_seconds",
                "gauge",
                "How long the lifecycle hook held the instance, from the Terminated state to the completion.",
                [({}, state.last_lifecycle_held_seconds)],
            )
        )
    if state.last_drain_seconds is not None:
        families.append(
            (
                "nodeagent_drain_duration_seconds",
                "gauge",
                "How long the last drain took, from its start to its end.",
                [({}, state.last_drain_seconds)],
            )
        )
    if state.last_poll is not None:
        families.append(
            (
                "nodeagent_last_poll_timestamp_seconds",
                "gauge",
                "When IMDS was last polled (Unix time); rewritten at least every 15 s.",
                [({}, state.last_poll)],
            )
        )
        families.append(
            (
                "nodeagent_last_poll_ok",
                "gauge",
                "1 if the last IMDS poll succeeded.",
                [({}, 1 if state.last_poll_ok else 0)],
            )
        )
    lines: list[str] = []
    for name, kind, help_text, samples in families:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
            lines.append(
                f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    """Readers (node_exporter) see the old file or the new one; see atomic_file."""
    replace_file(path, text.encode("utf-8"), 0o644, prefix=".nodeagent.", suffix=".prom.tmp")


def _seconds_between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None

    try:
        return max(0.0, (parse_rfc3339_utc(end) - parse_rfc3339_utc(start)).total_seconds())
    except ValueError:
        return None


class MetricsReporter:
    """Reporter: keeps the counters and rewrites the textfile on change (and every 15 s idle)."""

    def __init__(
        self, path: str, *, clock: Callable[[], float] = time.time, idle_rewrite_s: float = IDLE_REWRITE_S
    ):
        self.path = path
        self.clock = clock
        self.idle_rewrite_s = idle_rewrite_s
        self.state = MetricsState(start_time=clock())
        self.writes = 0
        self._lock = threading.Lock()
        self._last_write = 0.0
        self._once = LogOnce(log)
        self._counted: dict[str, bool] = {}
        self._write()

    # ---- counting hooks also used by other reporters

    def api_error(self) -> None:
        with self._lock:
            self.state.api_errors += 1
        # no write here: errors come in bursts; the next change or idle rewrite carries them

    def webhook_result(self, delivered: bool) -> None:
        with self._lock:
            self.state.webhook["delivered" if delivered else "failed"] += 1
        self._write()

    # ---- Reporter

    def notice_received(self, notice, record, plan) -> None:
        with self._lock:
            self.state.notices[record.kind] = self.state.notices.get(record.kind, 0) + 1
        self._write()

    def step(self, record, reason: str, message: str) -> None:
        with self._lock:
            if reason == "DrainStarted":
                self.state.draining = 1
            elif reason in ("DrainFinished", "DrainFailed"):
                self.state.draining = 0
                self.state.drains["finished" if reason == "DrainFinished" else "failed"] += 1
            elif reason in LIFECYCLE_CALLS:
                key = LIFECYCLE_CALLS[reason]
                self.state.lifecycle[key] = self.state.lifecycle.get(key, 0) + 1
                if reason == "LifecycleCompleted":
                    self.state.last_lifecycle_held_seconds = held_seconds(record)
        self._write()

    def finished(self, record) -> None:
        with self._lock:
            self.state.draining = 0
            if record.drain_finished and not self._counted.get(record.id):
                self._counted[record.id] = True  # a notice's pods are counted once
                self.state.pods_evicted += record.evicted
                self.state.pods_forced += record.forced
                self.state.pods_failed += record.failed
                self.state.pods_left += len(record.left)
                duration = _seconds_between(record.drain_started, record.drain_finished)
                if duration is not None:
                    self.state.last_drain_seconds = duration
        self._write()

    def cancelled(self, record) -> None:
        with self._lock:
            self.state.notices_cancelled += 1
        self._write()

    def forgotten(self, notice_ids: tuple[str, ...]) -> None:
        with self._lock:
            for notice_id in notice_ids:
                self._counted.pop(notice_id, None)

    def polled(self, ok: bool, errors) -> None:
        with self._lock:
            changed = self.state.last_poll_ok != ok or bool(errors)
            self.state.imds_errors += len(errors or {})
            self.state.last_poll = self.clock()
            self.state.last_poll_ok = ok
        if changed or self.clock() - self._last_write >= self.idle_rewrite_s:
            self._write()

    def flush(self, timeout_s: float) -> bool:
        return True  # every change is written when it happens: nothing is ever queued

    def close(self) -> None:
        self._write()

    # ---- I/O

    def _write(self) -> None:
        with self._lock:
            text = render_textfile(self.state)
            try:
                write_atomically(self.path, text)
            except OSError as error:
                problem = f"cannot write metrics to {self.path}: {error.strerror or error}"
                self._once.say("write", problem)
                return
            if self._once.clear("write"):
                log.info("metrics written to %s again", self.path)
            self.writes += 1
            self._last_write = self.clock()
