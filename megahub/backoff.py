"""Exponential backoff with jitter, for loops that retry an operation in place."""

import random


def backoff_delay_s(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): base x 2^(attempt-1),
    capped, then drawn uniformly from its upper half ("equal jitter") so that processes that
    failed together do not retry together, while each wait still grows."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    return random.uniform(delay / 2, delay)  # spacing, not security
