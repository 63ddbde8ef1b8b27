"""Throttles whose rates come from settings at request time (env-tunable, test-overridable).

Counting is one atomic increment per request in Django's default cache: per process in the
embedded default (locmem), shared by every web process when ``REDIS_URL`` is set. DRF's own
throttles read a list of timestamps and write it back, which loses updates when two processes
(or threads) count the same client at once; an increment cannot.

A client's window opens at its first request and lasts the rate's period: the first N requests
in it pass, the others are 429 with Retry-After = the time left in the window.
"""

import logging

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle

logger = logging.getLogger("megahub.throttling")


def _hit(key: str, timeout: int) -> int:
    """Count one request under ``key`` (created with ``timeout`` on first use); the new count."""
    try:
        count = cache.incr(key)
    except ValueError:  # no window open for this client
        if cache.add(key, 1, timeout):
            return 1
        count = cache.incr(key)  # another process opened it at the same moment
    if count == 1:  # the key expired between Redis' existence check and INCR: give it a TTL
        cache.touch(key, timeout)
    return count


class CountingThrottleMixin:
    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        self.window_end = self.now + self.duration
        try:
            count = _hit(self.key, self.duration)
            if count == 1:
                cache.set(f"{self.key}:start", self.now, self.duration)
            elif count > self.num_requests:
                start = cache.get(f"{self.key}:start")
                if start is not None:
                    self.window_end = start + self.duration
        except Exception:  # the cache server is unreachable: never fail a request for it
            logger.warning("throttle cache unavailable; request not counted", exc_info=True)
            return True
        return count <= self.num_requests

    def wait(self):
        return max(0.0, self.window_end - self.now)


class UserThrottle(CountingThrottleMixin, UserRateThrottle):
    def get_rate(self):
        return settings.THROTTLE_USER_RATE


class AnonThrottle(CountingThrottleMixin, AnonRateThrottle):
    def get_rate(self):
        return settings.THROTTLE_ANON_RATE
