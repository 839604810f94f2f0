"""`nodeagent migrate-from-nth`: read NTH chart values as Helm does, print a conf.d drop-in.

The I/O around two pure modules: helm_values (Helm's -f and --set) and nth_migrate (the table).
The drop-in goes to standard output, the notes to standard error. Exit 0 once the values could be
read; 2 with one line naming the file or argument when they could not (nothing on standard output).
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
from typing import Any

from nodeagent import __version__, nth_migrate
from nodeagent.helm_values import ValuesError, dotted, effective_values, parse_set, parse_values_yaml

EX_USAGE = 2
MAX_VALUES_BYTES = 1 << 20


def read_values_file(path: str) -> dict[str, Any]:
    """One -f argument ('-' = standard input) -> its mapping."""
    if path == "-":
        text = sys.stdin.read(MAX_VALUES_BYTES + 1)
        if len(text) > MAX_VALUES_BYTES:
            raise ValuesError(f"standard input: larger than {MAX_VALUES_BYTES} characters")
        return parse_values_yaml(text, "standard input")
    try:
        # O_NONBLOCK: a FIFO given by mistake is refused below instead of waiting for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValuesError(f"{path}: not a regular file")
            data = handle.read(MAX_VALUES_BYTES + 1)
    except OSError as error:
        raise ValuesError(f"{path}: {error.strerror or error}") from None
    if len(data) > MAX_VALUES_BYTES:
        raise ValuesError(f"{path}: larger than {MAX_VALUES_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValuesError(f"{path}: not UTF-8 (byte {error.start})") from None
    return parse_values_yaml(text, path)


def describe_inputs(files: list[str], sets: list[str]) -> str:
    """The inputs as a command line, for the drop-in's header; a secret is shown by its key only."""
    words = [f"-f {shlex.quote(path)}" for path in files]
    for argument in sets:
        pairs = []
        for path, value in parse_set(argument):
            hidden = str(path[0]) in nth_migrate.SECRET_VALUES
            pairs.append(f"{dotted(path)}={'<not shown>' if hidden else _shown(value)}")
        words.append(f"--set {shlex.quote(','.join(pairs))}")
    return " ".join(words)


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return "{" + ",".join(_shown(item) for item in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return "null" if value is None else str(value)


def main_migrate_from_nth(args: argparse.Namespace) -> int:
    try:
        files = [read_values_file(path) for path in args.values]
        values = effective_values(files, args.set)
    except ValuesError as error:
        print(f"nodeagent migrate-from-nth: {error}", file=sys.stderr)
        return EX_USAGE
    conversion = nth_migrate.convert(values)
    sys.stdout.write(
        nth_migrate.render_dropin(conversion, __version__, describe_inputs(args.values, args.set))
    )
    sys.stdout.flush()
    sys.stderr.write(nth_migrate.render_notes(conversion))
    return 0
