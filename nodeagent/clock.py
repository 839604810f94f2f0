"""Time, from one place: the clock every part reads, and the two ways we write a moment down.

Deciding code never reads a clock; it is given `now`. The daemon's threads read time through a
`Clock`, so a test can run a two-day maintenance window in milliseconds with a fake one.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Protocol

from nodeagent.timefmt import parse_optional_rfc3339, parse_rfc3339_utc


class Clock(Protocol):
    def now(self) -> datetime:
        """Aware UTC wall-clock time."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait on `event` for up to `seconds`; True when it was set."""


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


def utcnow() -> datetime:
    """For reporting only (status output, message timestamps); deciding code is given `now`."""
    return datetime.now(timezone.utc)


def iso(moment: datetime) -> str:
    """The state file's and the notice log's form, with microseconds: 2026-11-25T11:44:42.000000Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def iso_seconds(moment: datetime) -> str:
    """The form people and the API see (annotations, Events, webhook): 2026-11-25T11:44:42Z."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return parse_rfc3339_utc(text)


def parse_optional_iso(text: str | None) -> datetime | None:
    return parse_optional_rfc3339(text)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)
