"""sd_notify: READY, STATUS, WATCHDOG, STOPPING. Silent when NOTIFY_SOCKET is unset."""

from __future__ import annotations

import sdnotify


class SystemdNotifier:
    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier()
        self.last_status = ""

    def ready(self) -> None:
        self._notifier.notify("READY=1")

    def status(self, text: str) -> None:
        if text != self.last_status:
            self.last_status = text
            self._notifier.notify(f"STATUS={text}")

    def watchdog(self) -> None:
        self._notifier.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self._notifier.notify("STOPPING=1")

    def reloading(self) -> None:
        self._notifier.notify("RELOADING=1")
