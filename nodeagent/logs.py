"""Logging to stdout with syslog priority prefixes, so journald shows the levels.

journald splits a stream at "\n" and at NUL, and reads a "<N>" at the start of each piece as its
priority; messages quote API servers, webhooks and files, so every record is made one line of
printable text before it is written (`one_line`).
"""

from __future__ import annotations

import logging
import re
import sys
from typing import TextIO

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

# C0 controls (but \n, which becomes " | "), DEL, C1 controls, the Unicode line and paragraph
# separators, and lone surrogates (which no UTF-8 stream can encode: the record would be lost
# with a "--- Logging error ---" traceback instead).
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def one_line(text: str) -> str:
    """Printable single-line text: newlines become " | ", other control characters \\xNN/\\uNNNN."""
    return _UNSAFE.sub(_escape, text.replace("\r\n", "\n").replace("\n", " | "))


class JournalPrefixFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6)
        try:
            message = record.getMessage()
        except Exception as error:  # a bad format string must not lose the record
            message = f"{record.msg!r} (unformattable: {type(error).__name__})"
        if record.exc_info and record.levelno >= logging.ERROR:
            # Only unexpected failures carry a traceback; expected ones are one line.
            message += "\n" + self.formatException(record.exc_info)
        return f"<{priority}>{one_line(message)}"


def setup(level: str, stream: TextIO | None = None) -> None:
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JournalPrefixFormatter())
    root = logging.getLogger("nodeagent")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False


def set_level(level: str) -> None:
    logging.getLogger("nodeagent").setLevel(level.upper())
