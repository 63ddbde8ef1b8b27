"""Throttles whose rates come from settings at request time (env-tunable, test-overridable)."""

from django.conf import settings
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle


class UserThrottle(UserRateThrottle):
    def get_rate(self):
        return settings.THROTTLE_USER_RATE


class AnonThrottle(AnonRateThrottle):
    def get_rate(self):
        return settings.THROTTLE_ANON_RATE
