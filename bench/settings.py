"""Bench-only settings: the project's settings, plus the baseline endpoints' urlconf (the no-op
floor and the peers, bench/urls.py) and django-celery-results for the peer's worker
(bench/peer_celery.py).

Used by every benchmark's driver, gunicorn and the peer's worker. Everything else, including
the database (DATABASE_URL, pointed at a megahub_bench* database by bench.common.configure),
comes from megahub.settings unchanged.
"""

from megahub.settings import *  # noqa: F403

if not DATABASES["default"]["NAME"].startswith("megahub_bench"):  # noqa: F405
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"bench.settings only runs on megahub_bench* databases, not {DATABASES['default']['NAME']}"  # noqa: F405
    )

INSTALLED_APPS = [*INSTALLED_APPS, "django_celery_results"]  # noqa: F405
ROOT_URLCONF = "bench.urls"
SECURE_SSL_REDIRECT = False  # the benchmarks call gunicorn over plain http on localhost
