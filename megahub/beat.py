"""Beat's scheduler: django-celery-beat's DatabaseScheduler, kept in step with the code."""

from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import DatabaseScheduler


class PlatformScheduler(DatabaseScheduler):
    """DatabaseScheduler writes CELERY_BEAT_SCHEDULE into its tables at startup but never
    removes a row: a platform entry renamed or dropped in the code would keep firing a task name
    no worker knows. Before the first read, the ``megahub.*`` rows that CELERY_BEAT_SCHEDULE no
    longer declares are deleted (entries added by hand under other names are left alone)."""

    def setup_schedule(self):
        stale = PeriodicTask.objects.filter(name__startswith="megahub.").exclude(
            name__in=list(settings.CELERY_BEAT_SCHEDULE)
        )
        for name in stale.values_list("name", flat=True):
            self.logger.warning("beat: removing stale entry %s", name)
        stale.delete()
        super().setup_schedule()
