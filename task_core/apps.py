from django.apps import AppConfig


class TaskCoreConfig(AppConfig):
    name = "task_core"
    verbose_name = "Task hub"

    def ready(self):
        # Registers the demo task types shipped with the hub, and TaskType.submit's producer.
        from task_core import producer, task_types  # noqa: F401
        from task_core.signals import events_relayed
        from task_core.webhooks import webhooks_fan_out

        events_relayed.connect(webhooks_fan_out, dispatch_uid="task_core.webhooks_fan_out")
