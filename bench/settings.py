"""Bench-only settings: the project's settings, plus the baseline no-op endpoint's urlconf.

Used by the REST and list benchmarks (gunicorn and in-process). Everything else, including the
database (DATABASE_URL, pointed at a megahub_bench* database by bench.common.configure), comes
from megahub.settings unchanged.
"""

from megahub.settings import *  # noqa: F403

if not DATABASES["default"]["NAME"].startswith("megahub_bench"):  # noqa: F405
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"bench.settings only runs on megahub_bench* databases, not {DATABASES['default']['NAME']}"  # noqa: F405
    )

ROOT_URLCONF = "bench.urls"
SECURE_SSL_REDIRECT = False  # the benchmarks call gunicorn over plain http on localhost
