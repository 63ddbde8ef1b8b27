"""Test-only overrides of megahub.settings (kept small)."""

import os

# Each pytest process (xdist worker) gets its own broker queues, so one process's worker never
# takes another's messages (each process also has its own test database). The xdist worker id
# is not known yet when settings load, and xdist workers inherit the controller's environment,
# so the pid names them; tests/integration deletes them at exit.
os.environ["CELERY_QUEUE_PREFIX"] = f"test-{os.getpid()}."
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-any-deployment")

from megahub.settings import *  # noqa: F403

SECURE_SSL_REDIRECT = False  # the test client and live_server speak plain http
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast user fixtures
LOG_FORMAT = "text"
LOGGING["handlers"]["console"]["formatter"] = "text"  # noqa: F405
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
# The webhook tests' receivers listen on 127.0.0.1 (tests/webhook_receiver.py); the refusal of
# loopback targets is tested with this emptied.
WEBHOOK_ALLOWED_NETWORKS = ["127.0.0.0/8", "::1/128"]
MEGAHUB_DEMO_TASK_TYPES = True  # the shipped demo types are the suite's workload
# In-process tests count throttles per process whatever the shell's REDIS_URL says (parallel
# runs would otherwise share counters); tests/integration starts real processes with Redis.
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
