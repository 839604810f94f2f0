"""What the interactive commands (status, drill, check-config) print: text without control
characters. Their output quotes IMDS, the API server, the state file and config files; a terminal
escape in any of them must not reach the operator's terminal (retitle it, clear it, fake lines)."""

from __future__ import annotations

import sys
from typing import TextIO

from nodeagent.logs import one_line


def printable(text: str) -> str:
    """Each line made printable as the log does (nodeagent.logs.one_line: controls \\xNN, U+2028,
    U+2029 and lone surrogates \\uNNNN); the line breaks between them are kept."""
    return "\n".join(one_line(line) for line in text.split("\n"))


def say(text: str = "", file: TextIO | None = None) -> None:
    print(printable(text), file=file or sys.stdout, flush=True)
