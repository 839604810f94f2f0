"""Log a repeating problem once, not on every poll or retry.

A key names the problem ("poll-spot", "api-503"); what was last said under it is kept, so the log
shows a problem when it starts or changes, and (if the caller clears the key) when it ends.
"""

from __future__ import annotations

import logging
import threading


class LogOnce:
    def __init__(self, logger: logging.Logger):
        self._log = logger
        self._said: dict[str, str] = {}
        self._lock = threading.Lock()  # reporters and the drain call from worker threads

    def say(self, key: str, text: str, level: int = logging.WARNING) -> bool:
        """Log `text` unless it is what was last said under `key`. True when it was logged."""
        with self._lock:
            if self._said.get(key) == text:
                return False
            self._said[key] = text
        self._log.log(level, "%s", text)
        return True

    def first(self, key: str, text: str, level: int = logging.WARNING) -> bool:
        """Log `text` only if nothing was said under `key` yet (later texts are dropped)."""
        with self._lock:
            if key in self._said:
                return False
            self._said[key] = text
        self._log.log(level, "%s", text)
        return True

    def clear(self, key: str) -> str | None:
        """Forget `key` (the problem ended); returns what was said under it, if anything."""
        with self._lock:
            return self._said.pop(key, None)

    def said(self, prefix: str = "") -> dict[str, str]:
        """What is currently said under the keys starting with `prefix`, in the order said."""
        with self._lock:
            return {key: text for key, text in self._said.items() if key.startswith(prefix)}
