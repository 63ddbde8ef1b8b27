from django.apps import AppConfig


class TaskCoreConfig(AppConfig):
    name = "task_core"
    verbose_name = "Task hub"

    def ready(self):
        # Registers the demo task types shipped with the hub, and TaskType.submit's producer.
        from task_core import producer, task_types  # noqa: F401
