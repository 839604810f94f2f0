"""Logging to stdout with syslog priority prefixes, so journald shows the levels."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class JournalPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        message = record.getMessage().replace("\n", " | ")
        if record.exc_info and record.levelno >= logging.ERROR:
            # Only unexpected failures carry a traceback; expected ones are one line.
            message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        return f"<{priority}>{message}"


def setup(level: str, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JournalPrefixFormatter())
    root = logging.getLogger("nodeagent")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_level(level: str) -> None:
    logging.getLogger("nodeagent").setLevel(level.upper())
