"""Exponential backoff with jitter: the one delay formula of every retry in megahub (the events
relay's publishes, outbound deliveries; usable for task retries)."""

import random

EQUAL_JITTER = (0.5, 1.0)


def backoff_delay_s(
    attempt: int, *, base: float, cap: float, jitter: tuple[float, float] = EQUAL_JITTER
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): base x 2^(attempt-1),
    capped, then drawn uniformly between ``jitter[0]`` and ``jitter[1]`` times that, so that
    processes that failed together do not retry together. The default ("equal jitter", the upper
    half) keeps each wait growing; ``(1 - j, 1 + j)`` spreads it by +-j around the step, and
    ``(1, 1)`` is no jitter."""
    delay = min(cap, base * 2 ** max(attempt - 1, 0))
    low, high = jitter
    return max(0.0, random.uniform(delay * low, delay * high))  # spacing, not security
