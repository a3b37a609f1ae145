"""Retrying with capped exponential backoff and full jitter (the exporters, the node's bus)."""

import random

FIRST_BACKOFF = 1.0  # seconds: the cap of the first retry's delay, doubled each failure


def backoff_delay(failures, max_backoff, rng=random.random):
    """Full jitter: uniform in [0, min(max_backoff, FIRST_BACKOFF * 2 ** (failures - 1)))."""
    return rng() * min(max_backoff, FIRST_BACKOFF * 2 ** min(failures - 1, 62))
