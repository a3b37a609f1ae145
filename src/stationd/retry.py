"""Retrying with capped exponential backoff and full jitter (the exporters, the node's bus)."""

import random
from collections.abc import Callable

FIRST_BACKOFF = 1.0  # seconds: the cap of the first retry's delay, doubled each failure


def backoff_delay(failures: int, max_backoff: float, rng: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max_backoff, FIRST_BACKOFF * 2 ** (failures - 1)))."""
    return rng() * min(max_backoff, FIRST_BACKOFF * 2 ** min(failures - 1, 62))
