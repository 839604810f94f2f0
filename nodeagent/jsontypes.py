"""The type of a decoded JSON object (a Kubernetes API answer, the state file).

Its values are `Any` on purpose: every reader checks the fields it uses where it uses them,
and spelling each API object out as a TypedDict would duplicate the Kubernetes schema.
"""

from __future__ import annotations

from typing import Any

JsonObject = dict[str, Any]
