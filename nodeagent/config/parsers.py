"""Value parsers for the key table: text -> typed value, or ValueError saying what is wrong.

Pure. A parser may quote the text it rejects; the loader hides it for secret keys.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Callable


def parse_duration(text: str) -> float:
    """'90s', '2m', '1.5s', '500ms', '1h' or a bare number of seconds -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 90s, 2m, 1.5s, 500ms)")
    number, unit = float(match.group(1)), match.group(2) or "s"
    return number * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in choices:
            raise ValueError(f"{text!r} is not one of: {', '.join(choices)}")
        return value

    return parse


def duration_between(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if not low <= seconds <= high:
            raise ValueError(f"{text!r} is out of range ({low:g}s..{high:g}s)")
        return seconds

    return parse


def optional_duration_between(low: float, high: float) -> Callable[[str], float | None]:
    within = duration_between(low, high)

    def parse(text: str) -> float | None:
        return within(text) if text.strip() else None

    return parse


def int_between(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise ValueError(f"{value} is out of range ({low}..{high})")
        return value

    return parse


def share(text: str) -> float:
    """A fraction of a whole, 0.1..0.9."""
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0.1 <= value <= 0.9:
        raise ValueError(f"{value:g} is out of range (0.1..0.9)")
    return value


def url(text: str) -> str:
    value = text.strip()
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise ValueError(f"{text!r} is not an http(s) URL")
    return value.rstrip("/")


def optional_url(text: str) -> str:
    return url(text) if text.strip() else ""


def imds_url(text: str) -> str:
    value = url(text)
    if not value.lower().startswith("http://"):
        raise ValueError(f"{text!r} is not an http:// URL (IMDS has no TLS endpoint)")
    return value


def optional_https_url(text: str) -> str:
    value = url(text) if text.strip() else ""
    if value and not value.lower().startswith("https://"):
        raise ValueError(f"{text!r} is not an https:// URL (the AWS API is only called over TLS)")
    return value


def path(text: str) -> str:
    value = text.strip()
    if not value.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path")
    return value


def optional_path(text: str) -> str:
    return path(text) if text.strip() else ""


def hook_name(text: str) -> str:
    """Lifecycle hook and Auto Scaling group names: 1..255 printable characters, no spaces at the ends."""
    value = text.strip()
    if value and not (len(value) <= 255 and re.fullmatch(r"[\x21-\x7e]([\x20-\x7e]*[\x21-\x7e])?", value)):
        raise ValueError(f"{text!r} is not a valid name (up to 255 printable ASCII characters)")
    return value


def node_name(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
        raise ValueError(f"{text!r} is not a valid node name")
    return value


def taint(text: str) -> str:
    value = text.strip()
    if value and not re.fullmatch(
        r"[A-Za-z0-9./_-]+(=[A-Za-z0-9<>._-]*)?:(NoSchedule|PreferNoSchedule|NoExecute)", value
    ):
        raise ValueError(f"{text!r} is not a taint (key[=value]:NoSchedule)")
    return value


def priority_classes(text: str) -> str:
    """Comma-separated PriorityClass names (DNS subdomains). A typo such as ';' for ',' would
    otherwise silently put no pod in the last tier."""
    for name in (part.strip() for part in text.split(",")):
        if name and not (
            len(name) <= 253
            and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name)
        ):
            raise ValueError(f"{name!r} is not a PriorityClass name (comma-separated lowercase DNS names)")
    return text.strip()


def headers(text: str) -> str:
    """'Name: value; Name2: value2'. The error never quotes a value: they are secrets."""
    for index, entry in enumerate((e for e in text.split(";") if e.strip()), start=1):
        name, sep, value = entry.partition(":")
        if not sep or not re.fullmatch(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+", name.strip()):
            raise ValueError(f"entry {index} is not 'Name: value' (entries are separated by ';')")
        if "\r" in value or "\n" in value:
            raise ValueError(f"entry {index} ({name.strip()}) has a line break in its value")
    return text.strip()
