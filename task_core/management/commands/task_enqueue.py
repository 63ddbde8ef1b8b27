import logging

from django.core.management.base import BaseCommand, CommandError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from megahub.errors import DomainError
from task_core import services
from task_core.management import add_task_request_arguments, domain_error, task_request


class Command(BaseCommand):
    help = (
        "Create tasks for a brand, exactly as POST /tasks/ would (published on commit). With "
        "--count N, draws a progress bar and ends with a one-line summary."
    )

    def add_arguments(self, parser):
        add_task_request_arguments(parser)
        parser.add_argument("--count", type=int, default=1, help="how many identical tasks")

    def handle(self, *args, **o):
        if o["count"] < 1:
            raise CommandError("--count must be at least 1.", returncode=2)
        request = task_request(o)
        create = {
            "brand": request["brand"],
            "user": request["user"],
            "task_type": request["task_type"],
            "priority": request["priority"],
            "description": request["description"],
            "context_data": request["context"],
            "scheduled_for": request["scheduled_for"],
            "idempotency_key": request["idempotency_key"],
            "actor": "system:command",
        }
        try:  # the same checks first: bad input never leaves a partial batch
            services.task_validate_request(
                task_type=create["task_type"],
                priority=create["priority"],
                context_data=create["context_data"],
            )
            if o["count"] == 1:
                task, created = services.task_create(**create)
                self.stdout.write(
                    f"{'created' if created else 'existing'} {task.task_id} id={task.pk}"
                )
                return
            self._many(create, o["count"], quiet=o["verbosity"] < 2)
        except DomainError as exc:
            raise domain_error(exc)

    def _many(self, create: dict, count: int, *, quiet: bool) -> None:
        console = Console(file=self.stdout._out, stderr=False)
        # Two log lines per task (created, queued) would drown the bar: only warnings and
        # errors while the batch runs, unless -v 2.
        task_log = logging.getLogger("megahub.tasks")
        level = task_log.level
        if quiet:
            task_log.setLevel(logging.WARNING)
        try:
            first, last, created, existing = self._create(create, count, console)
        finally:
            task_log.setLevel(level)
        brand = create["brand"]
        self.stdout.write(
            f"{created} created, {existing} existing: {count} {create['task_type']} tasks for "
            f"brand {brand.slug} (id={brand.pk}), {first.task_id} .. {last.task_id}"
        )

    def _create(self, create: dict, count: int, console: Console):
        created = existing = 0
        first = last = None
        with Progress(
            TextColumn("enqueue"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            job = bar.add_task("enqueue", total=count)
            for _ in range(count):
                task, was_created = services.task_create(**create)  # published on commit
                created += was_created
                existing += not was_created
                first = first or task
                last = task
                bar.advance(job)
        return first, last, created, existing
