"""Jitter for every retry and pacing schedule, so a fleet that fails together does not retry
together.

Two shapes, both pure given their random source (a `random.Random`; tests pass a seeded one):

- `spread(base, rng)`: "equal jitter", base/2 + uniform(0, base/2). A backoff keeps at least half
  its length (so a retry storm stays damped) while nodes that failed in the same second come back
  spread over half a step.
- `after(base, rng)`: base + uniform(0, min(base, MAX_EXTRA_S)). For a wait the server asked for
  (Retry-After): never shorter than asked, and a fleet told "2 s" returns over the following
  second instead of in one burst.
- `stretch(base, rng)`: base * uniform(1, 1.2). A pacing gap far from any deadline: never more
  often than planned, and spread.
"""

from __future__ import annotations

import random

MAX_EXTRA_S = 1.0  # the most `after` adds: enough to spread a fleet, short next to a deadline


def spread(base_s: float, rng: random.Random) -> float:
    if base_s <= 0:
        return 0.0
    return base_s / 2 + rng.uniform(0.0, base_s / 2)


def after(base_s: float, rng: random.Random) -> float:
    base_s = max(0.0, base_s)
    return base_s + rng.uniform(0.0, min(max(base_s, 0.1), MAX_EXTRA_S))


def stretch(base_s: float, rng: random.Random, share: float = 0.2) -> float:
    """base * uniform(1, 1 + share): a pacing gap that is never shorter than planned."""
    return max(0.0, base_s) * (1.0 + rng.uniform(0.0, share))
