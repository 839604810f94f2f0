"""Reading a moment written down: RFC 3339 (IMDS, the state file, the API) and the scheduled-event
date form ("21 Jan 2019 09:00:43 GMT"). Pure; Python 3.9's fromisoformat rejects "Z", so no
stdlib parser is used."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339_RE = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)


def parse_rfc3339_utc(text: str) -> datetime:
    """Parse an RFC 3339 timestamp ("2017-09-18T08:22:00Z", fractions, offsets) to aware UTC.

    Works on Python 3.9 (whose fromisoformat rejects "Z"). Raises ValueError on anything else,
    including a missing offset: a naive time from IMDS would be ambiguous.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected a string timestamp, got {type(text).__name__}")
    m = _RFC3339_RE.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 timestamp: {_preview(text)}")
    year, month, day, hour, minute, second = (int(g) for g in m.group(1, 2, 3, 4, 5, 6))
    fraction = m.group(7) or ""
    microsecond = int(fraction[:6].ljust(6, "0")) if fraction else 0
    if m.group(8):
        tz = timezone.utc
    else:
        off_h, off_m = int(m.group(10)), int(m.group(11))
        if off_h > 23 or off_m > 59:
            raise ValueError(f"bad UTC offset in {_preview(text)}")
        offset = timedelta(hours=off_h, minutes=off_m)
        tz = timezone(-offset if m.group(9) == "-" else offset)
    try:
        local = datetime(year, month, day, hour, minute, second, microsecond, tzinfo=tz)
        return local.astimezone(timezone.utc)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid date/time {_preview(text)}: {exc}") from None


# Locale-independent: strptime's %b depends on LC_TIME.
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"),
        start=1,
    )
}
# "21 Jan 2019 09:00:43 GMT"; the day is not zero-padded ("1 Jan 2020 01:03:47 GMT").
_SCHEDULED_TIME_RE = re.compile(
    r"(\d{1,2}) ([A-Za-z]{3}) (\d{4}) (\d{2}):(\d{2}):(\d{2}) (?:GMT|UTC)", re.ASCII
)


def parse_scheduled_time(text: str) -> datetime:
    """Parse the scheduled-event date format ("21 Jan 2019 09:00:43 GMT") to aware UTC."""
    if not isinstance(text, str):
        raise ValueError(f"expected a string date, got {type(text).__name__}")
    m = _SCHEDULED_TIME_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a 'D Mon YYYY HH:MM:SS GMT' date: {_preview(text)}")
    month = _MONTHS.get(m.group(2).lower())
    if month is None:
        raise ValueError(f"unknown month {m.group(2)!r} in {_preview(text)}")
    day, year, hour, minute, second = (int(g) for g in m.group(1, 3, 4, 5, 6))
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=timezone.utc)
    except ValueError as exc:
        raise ValueError(f"invalid date {_preview(text)}: {exc}") from None


def parse_optional_rfc3339(text: str | None) -> datetime | None:
    """parse_rfc3339_utc for fields that may be absent or wrong: None instead of an error."""
    if not text:
        return None
    try:
        return parse_rfc3339_utc(text)
    except ValueError:
        return None


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")
