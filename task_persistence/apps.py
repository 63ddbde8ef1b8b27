from django.apps import AppConfig


class TaskPersistenceConfig(AppConfig):
    name = "task_persistence"
    verbose_name = "Persistent jobs"

    def ready(self):
        """Plug into task_core through its extension points (task_core never imports us)."""
        from celery.signals import worker_shutting_down

        from megahub.filters import StrictBooleanFilter
        from task_core.api.filters import register_task_filter
        from task_core.api.serializers import register_detail_section
        from task_core.context import checkpoint_hooks
        from task_core.signals import attempt_finished
        from task_persistence import selectors, services, task_types  # noqa: F401
        from task_persistence.api.serializers import JobSectionSerializer

        checkpoint_hooks.update(
            save=services.checkpoint_save,
            load=services.checkpoint_load,
            worker_lost=services.job_worker_lost,
        )
        register_task_filter(
            "is_resumable",
            StrictBooleanFilter(
                method=_filter_is_resumable, label="Task type is resumable (has a job)"
            ),
        )
        register_detail_section(
            "persistent_job", selectors.job_summary, serializer=JobSectionSerializer
        )
        worker_shutting_down.connect(_hand_back_on_shutdown, weak=False)
        attempt_finished.connect(_prune_after_success, weak=False)


def _filter_is_resumable(queryset, name, value):
    from task_persistence.selectors import resumable_task_types

    if value is None:
        return queryset
    names = resumable_task_types()
    return queryset.filter(task_type__in=names) if value else queryset.exclude(task_type__in=names)


def _hand_back_on_shutdown(sender=None, **kwargs):
    """Warm shutdown (SIGTERM) of a worker: its running jobs checkpoint and hand themselves back,
    so the worker can stop at once without losing progress. ``sender`` is the worker hostname."""
    import logging

    from task_persistence.services import jobs_hand_back

    try:
        jobs_hand_back(worker=str(sender))
    except Exception:  # the database may be gone too; the sweeper still rescues the jobs
        logging.getLogger("megahub.jobs").warning("hand back on shutdown failed", exc_info=True)


def _prune_after_success(sender=None, task=None, outcome=None, ctx=None, **kwargs):
    """Retention: a completed job keeps only its last JOB_CHECKPOINTS_KEEP checkpoints."""
    if outcome == "completed" and ctx is not None and ctx.spec.resumable:
        from task_persistence.services import checkpoints_prune

        checkpoints_prune(task_pk=task.pk)
