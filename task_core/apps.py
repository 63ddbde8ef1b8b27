from django.apps import AppConfig


class TaskCoreConfig(AppConfig):
    name = "task_core"
    verbose_name = "Task hub"

    def ready(self):
        # Registers the demo task types shipped with the hub.
        from task_core import task_types  # noqa: F401
