"""A console timeline for the interactive commands (`drill`, and the source-checkout demo).

The agent's log lines and its systemd notifications are printed with the seconds since the start,
so a person can follow a rehearsal as it happens.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, TextIO

from nodeagent.logs import one_line
from nodeagent.terminal import say


@dataclass
class Timeline:
    started: float
    out: TextIO = field(default=sys.stdout)

    def say(self, who: str, text: str) -> None:
        say(f"  +{time.monotonic() - self.started:6.2f}s  {who:<7} {one_line(text)}", self.out)


class TimelineHandler(logging.Handler):
    """The agent's log records, as timeline lines."""

    def __init__(self, timeline: Timeline):
        super().__init__(logging.INFO)
        self.timeline = timeline

    def emit(self, record: logging.LogRecord) -> None:
        self.timeline.say("agent", record.getMessage())


class NullNotifier:
    """No systemd here: STATUS lines go to the timeline instead."""

    def __init__(self, timeline: Timeline):
        self.timeline = timeline
        self.last_status = ""
        self._last_shown = 0.0

    def ready(self) -> None:
        self.timeline.say("agent", "READY=1")

    def status(self, text: str) -> None:
        # One STATUS line a second is plenty for a person reading the timeline.
        now = time.monotonic()
        if text != self.last_status and not text.startswith("watching") and now - self._last_shown >= 1.0:
            self.timeline.say("status", text)
            self._last_shown = now
        self.last_status = text

    def watchdog(self) -> None:
        pass

    def stopping(self) -> None:
        pass

    def reloading(self) -> None:
        pass


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` every 50 ms for up to `timeout_s`; its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())
