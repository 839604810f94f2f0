"""sd_notify: READY, STATUS, WATCHDOG, STOPPING. Silent when NOTIFY_SOCKET is unset.

A notification is newline-separated assignments, and STATUS text quotes API servers and IMDS:
an error message carrying "\nWATCHDOG=trigger" would be a second assignment (systemd would kill
the agent for a watchdog failure). So every STATUS is one line of printable text, bounded.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import sdnotify

from nodeagent.logs import one_line

# Without WATCHDOG_USEC (no WatchdogSec=, or not under systemd) pings are still sent this often.
DEFAULT_PING_EVERY_S = 2.0
# systemctl status shows one line; a datagram far larger than that would only cost memory in PID 1.
STATUS_MAX_CHARS = 1024


def status_assignment(text: str) -> str:
    """`STATUS=<text>` as one assignment: line breaks and other control characters escaped
    (nodeagent.logs.one_line), cut to STATUS_MAX_CHARS. Pure."""
    line = one_line(text)
    if len(line) > STATUS_MAX_CHARS:
        line = line[: STATUS_MAX_CHARS - 3] + "..."
    return f"STATUS={line}"


def ping_interval(environ: Mapping[str, str]) -> float:
    """A quarter of the watchdog period systemd set: every wake-up of an idle daemon costs CPU,
    so the loop does not ping on each poll, yet a missed ping or two never trips the watchdog."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return DEFAULT_PING_EVERY_S
    return usec / 1e6 / 4 if usec > 0 else DEFAULT_PING_EVERY_S


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._notifier = sdnotify.SystemdNotifier()
        self.last_status = ""
        self._ping_every = ping_interval(os.environ if environ is None else environ)
        self._pinged_at: float | None = None

    def _send(self, assignment: str) -> None:
        # sdnotify encodes as Latin-1 and drops, silently, a text it cannot encode; systemd reads
        # UTF-8. Handing it the UTF-8 bytes as Latin-1 characters sends those bytes unchanged.
        self._notifier.notify(assignment.encode("utf-8").decode("latin-1"))

    def ready(self) -> None:
        self._notifier.notify("READY=1")

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self._send(status_assignment(text))

    def watchdog(self) -> None:
        now = time.monotonic()
        if self._pinged_at is None or now - self._pinged_at >= self._ping_every:
            self._pinged_at = now
            self._notifier.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self._notifier.notify("STOPPING=1")

    def reloading(self) -> None:
        self._notifier.notify("RELOADING=1")
