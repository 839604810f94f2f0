"""Layering, pure: defaults < config files (in the order given) < NODEAGENT_<KEY> < flags.

`load_settings` takes the files' text, the environment and the flags as arguments, so every
rule here is tested with no disk at all; reading the files is nodeagent.config.loading's job.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nodeagent.config.errors import ConfigError
from nodeagent.config.keys import KEYS, KEYS_BY_NAME
from nodeagent.config.settings import Settings

ENV_PREFIX = "NODEAGENT_"
CONFIG_DIR_VARIABLE = ENV_PREFIX + "CONFIG_DIR"  # where the files are, not a key
KEY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
SHOWABLE_KEY = re.compile(r"[A-Z]+(_[A-Z]+)*")  # like every real key; no digits, so no key id or token


@dataclass(frozen=True)
class ConfigSource:
    """One KEY=value file: where it came from and its text."""

    origin: str
    text: str


def hide_secret(message: str, secret: str) -> str:
    """A parser's message with the rejected secret value taken out (parsers quote what they reject)."""
    if not secret.strip():
        return message
    return message.replace(repr(secret), "<hidden>").replace(secret.strip(), "<hidden>")


def parse_config_text(source: ConfigSource) -> list[tuple[str, str, int]]:
    """KEY=value lines -> [(key, value, line_no)]. Comments, blanks, CRLF and `export` are fine.

    Lines end at "\\n" only (a "\\r" before it is dropped), as the shell that reads the same file
    at boot (packaging/spot-label) sees them: form feeds, NEL or U+2028 do not start a line. A bad
    line is reported by file and line number, never quoted: it may hold a secret."""
    entries = []
    for line_no, raw_line in enumerate(source.text.split("\n"), start=1):
        line = raw_line[:-1] if raw_line.endswith("\r") else raw_line
        line = line.strip(" \t")
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].strip(" \t")
        if "=" not in line:
            raise ConfigError(
                "CONFIG_FILE",
                f"{source.origin}:{line_no}: expected KEY=value "
                "(the line is not shown: it may hold a secret)",
            )
        key, value = line.split("=", 1)
        key = key.strip(" \t")
        if not KEY_NAME.fullmatch(key):
            raise ConfigError(
                "CONFIG_FILE",
                f"{source.origin}:{line_no}: the text before '=' is not a KEY name "
                "(the line is not shown: it may hold a secret)",
            )
        value = value.strip(" \t")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        entries.append((key, value, line_no))
    return entries


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS_BY_NAME, n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def load_settings(
    files: Sequence[ConfigSource],
    environ: Mapping[str, str],
    flags: Mapping[str, str] | None = None,
) -> Settings:
    """Merge all layers and validate every key. Raises ConfigError naming the key."""
    raw: dict[str, str] = {spec.name: spec.default for spec in KEYS}
    sources: dict[str, str] = {spec.name: "default" for spec in KEYS}

    def put(key: str, value: str, origin: str) -> None:
        if key not in KEYS_BY_NAME:
            if not SHOWABLE_KEY.fullmatch(key):  # e.g. a pasted token before an '=': not echoed
                raise ConfigError(
                    "CONFIG_FILE",
                    f"unknown key, not shown: keys are upper-case words joined by '_' (from {origin})",
                )
            raise ConfigError(key, f"unknown key (from {origin}){_suggest(key)}")
        raw[key] = value
        sources[key] = origin

    for source in files:
        for key, value, line_no in parse_config_text(source):
            put(key, value, f"{source.origin}:{line_no}")
    for env_key, value in environ.items():
        if not env_key.startswith(ENV_PREFIX) or env_key == CONFIG_DIR_VARIABLE:
            continue
        put(env_key[len(ENV_PREFIX) :], value, f"env {env_key}")
    for key, value in (flags or {}).items():
        put(key, value, "flag")

    # Any: each key's parser returns its Settings field's type (the KEYS table pairs them).
    values: dict[str, Any] = {}
    for spec in KEYS:
        try:
            values[spec.field] = spec.parse(raw[spec.name])
        except ValueError as error:
            text = hide_secret(str(error), raw[spec.name]) if spec.secret else str(error)
            raise ConfigError(spec.name, f"{text} (from {sources[spec.name]})") from None
    return Settings(sources=sources, **values)


def parse_set_flags(pairs: Sequence[str]) -> dict[str, str]:
    """The command line's `--set KEY=value` pairs as flags (keys upper-cased)."""
    flags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(key or pair, "--set takes KEY=value")
        flags[key.strip().upper()] = value
    return flags
