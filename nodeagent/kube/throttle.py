"""What a throttling answer from the API server asks for. Pure.

The API server (API Priority and Fairness, or max-in-flight) answers 429 with `Retry-After:
<seconds>` and a Status whose `details.retryAfterSeconds` says the same; a proxy or load balancer
in front may answer 503 and may give an HTTP date instead. A PodDisruptionBudget refusal is also a
429, but it is an answer about one pod, not about the server's load: the drain paces those itself.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Mapping
from datetime import datetime, timezone

THROTTLING_STATUSES = (429, 503)
DEFAULT_PAUSE_S = 1.0  # a 429/503 that names no wait: client-go waits 1 s too


def is_pdb_refusal(status: int, message: str) -> bool:
    return status == 429 and "disruption budget" in message.lower()


def is_throttling(status: int, message: str) -> bool:
    """A 429 or 503 about the server's load (not a disruption-budget refusal)."""
    return status in THROTTLING_STATUSES and not is_pdb_refusal(status, message)


def retry_after_s(headers: Mapping[str, str] | None, body: object, now: datetime) -> float | None:
    """The wait the server asked for, in seconds, or None when it named none.

    The header wins (seconds, or an HTTP date taken against `now`); then the Status body's
    `details.retryAfterSeconds`. A value that cannot be read counts as not given."""
    header = _header(headers, "retry-after")
    if header is not None:
        text = header.strip()
        if text.isdigit():
            return float(int(text))
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=timezone.utc)
            return max(0.0, (when - now).total_seconds())
    if isinstance(body, Mapping):
        details = body.get("details")
        if isinstance(details, Mapping):
            value = details.get("retryAfterSeconds")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return float(value)
    return None


def disruption_budget(body: object) -> str | None:
    """The PodDisruptionBudget a refusal names in its Status causes ("The disruption budget <name>
    needs N healthy pods and has M currently"), or None."""
    if not isinstance(body, Mapping):
        return None
    details = body.get("details")
    causes = details.get("causes") if isinstance(details, Mapping) else None
    if not isinstance(causes, list):
        return None
    for cause in causes:
        message = cause.get("message") if isinstance(cause, Mapping) else None
        if isinstance(message, str):
            match = _BUDGET.match(message)
            if match:
                return match.group(1)
    return None


_BUDGET = re.compile(r"The disruption budget (\S{1,253}) needs ")


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if not headers:
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            return str(value)
    return None
