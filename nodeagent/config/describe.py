"""What check-config and status show for each key: its value as text, and where it came from."""

from __future__ import annotations

from nodeagent.config.keys import KEYS
from nodeagent.config.settings import Settings


def describe(settings: Settings) -> list[tuple[str, str, str]]:
    """(key, shown value, source) for every key of the table; secrets are masked."""
    rows = []
    for spec in KEYS:
        value = settings.value(spec)
        if spec.secret and value:
            shown = "<set, hidden>"
        elif value is None:  # an optional key left empty (POLL_INTERVAL_ASG: POLL_INTERVAL applies)
            shown = ""
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, float) and not spec.unitless:
            shown = f"{value:g}s"
        elif isinstance(value, float):
            shown = f"{value:g}"
        else:
            shown = str(value)
        rows.append((spec.name, shown, settings.sources.get(spec.name, "default")))
    return rows
