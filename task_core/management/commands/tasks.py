"""``manage.py tasks submit|list|show|watch|cancel|retry``: a brand's tasks from the shell
(docs/commands.md). Exit status: 0 done (a watched task completed), 1 the task failed or was
cancelled, or the action was refused in the task's state, 2 bad input, 3 ``watch --timeout``
ran out while the task was still going."""

from __future__ import annotations

import time

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from megahub.errors import DomainError
from task_core import producer, selectors, services
from task_core.management import add_task_request_arguments, brand_arg, domain_error, task_request
from task_core.models import Task, TaskEvent

EXIT_FAILED, EXIT_BAD_INPUT, EXIT_TIMEOUT = 1, 2, 3


def _when(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _event_line(event: TaskEvent) -> str:
    move = f"{event.from_status or '-'} -> {event.to_status}" if event.to_status else ""
    parts = [
        timezone.localtime(event.created_at).strftime("%H:%M:%S"),
        f"{event.kind:<16}",
        f"{move:<22}",
        event.actor,
    ]
    if event.message:
        parts.append(f"  {event.message}")
    return "  ".join(parts)


class Command(BaseCommand):
    help = (
        "A brand's tasks: submit, list, show, watch (live progress and timeline), cancel, "
        "retry. Exit status 0 ok/completed, 1 failed, 2 bad input, 3 watch timed out."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

        submit = sub.add_parser("submit", help="create a task, as POST /tasks/")
        add_task_request_arguments(submit)
        submit.add_argument("--watch", action="store_true", help="then watch it until it ends")
        self._watch_options(submit)

        listing = sub.add_parser("list", help="the brand's latest tasks")
        listing.add_argument("brand", help="brand id or slug")
        listing.add_argument("--status", choices=Task.Status.values)
        listing.add_argument("--type", dest="task_type")
        listing.add_argument("--limit", type=int, default=20)

        for name, text in (
            ("show", "a task's fields and timeline"),
            ("watch", "a live progress bar and the timeline until the task ends"),
            ("cancel", "cancel a task (a running one stops at its next check)"),
            ("retry", "give a failed or cancelled task a new attempt"),
        ):
            one = sub.add_parser(name, help=text)
            one.add_argument("brand", help="brand id or slug")
            one.add_argument("task_id", help="task_... (or the numeric id)")
            if name == "retry":
                one.add_argument("--watch", action="store_true", help="then watch it")
            if name in ("watch", "retry"):
                self._watch_options(one)

    @staticmethod
    def _watch_options(parser) -> None:
        parser.add_argument("--timeout", type=float, help="watch: give up after S seconds (3)")
        parser.add_argument("--interval", type=float, default=0.5, help="watch: poll every S s")

    def handle(self, *args, action, **options):
        out = self.stdout._out
        # Piped or captured output is not cut to 80 columns (grep-able lines).
        wide = None if getattr(out, "isatty", lambda: False)() else 240
        self.console = Console(file=out, highlight=False, soft_wrap=True, width=wide)
        getattr(self, f"do_{action}")(**options)

    # --- helpers ---------------------------------------------------------------------------
    def _task(self, brand, task_id: str) -> Task:
        tasks = Task.objects.for_brand(brand)
        lookup = {"pk": int(task_id)} if task_id.isascii() and task_id.isdigit() else None
        task = tasks.filter(**(lookup or {"task_id": task_id})).first()
        if task is None:
            raise CommandError(f"No task {task_id!r} in brand {brand.slug}.", returncode=2)
        return task

    def _summary(self, task: Task) -> str:
        line = f"{task.task_id}  {task.task_type}  {task.status}  {task.progress_percentage}%"
        if task.error_message and task.status in (Task.Status.FAILED, Task.Status.RETRYING):
            line += f"  error: {task.error_message}"
        return line

    def _outcome(self, task: Task) -> None:
        """The exit status of a task that ended: 0 completed, 1 failed or cancelled."""
        if task.status != Task.Status.COMPLETED:
            raise CommandError(f"task {self._summary(task)}", returncode=EXIT_FAILED)

    # --- actions ---------------------------------------------------------------------------
    def do_submit(self, *, watch, timeout, interval, **options):
        request = task_request(options)
        try:
            task = producer.submit(**request)
        except DomainError as exc:
            raise domain_error(exc)
        self.console.print(f"submitted {task.task_id} id={task.pk} ({task.status})")
        if watch:
            self._watch(task, timeout=timeout, interval=interval)

    def do_list(self, *, brand, status, task_type, limit, **options):
        if limit < 1:
            raise CommandError("--limit must be at least 1.", returncode=EXIT_BAD_INPUT)
        tasks = Task.objects.for_brand(brand_arg(brand))
        if status:
            tasks = tasks.filter(status=status)
        if task_type:
            tasks = tasks.filter(task_type=task_type)
        table = Table("task_id", "type", "status", "progress", "priority", "created", "error")
        for task in tasks.order_by("-id")[:limit]:
            table.add_row(
                task.task_id,
                task.task_type,
                task.status,
                f"{task.progress_percentage}%",
                task.priority,
                _when(task.created_at),
                (task.error_message or "")[:60],
            )
        self.console.print(table)

    def do_show(self, *, brand, task_id, **options):
        task = self._task(brand_arg(brand), task_id)
        fields = [
            ("task_id", task.task_id),
            ("id", task.pk),
            ("brand", f"{task.brand.name} ({task.brand.slug}, id={task.brand_id})"),
            ("type", task.task_type),
            ("status", task.status),
            ("progress", f"{task.progress_percentage}%"),
            ("priority", task.priority),
            ("attempts", f"{task.attempts} (max retries {task.max_retries})"),
            ("description", task.description or "-"),
            ("context", task.context_data),
            ("result", task.result_data),
            ("error", task.error_message or "-"),
            ("created", _when(task.created_at)),
            ("scheduled for", _when(task.scheduled_for)),
            ("started", _when(task.started_at)),
            ("completed", _when(task.completed_at)),
        ]
        for label, value in fields:
            self.console.print(f"{label:<14} {value}", markup=False)
        self.console.print("timeline:")
        for event in selectors.task_events(task=task):
            self.console.print("  " + _event_line(event), markup=False)

    def do_watch(self, *, brand, task_id, timeout, interval, **options):
        self._watch(self._task(brand_arg(brand), task_id), timeout=timeout, interval=interval)

    def do_cancel(self, *, brand, task_id, **options):
        task = self._task(brand_arg(brand), task_id)
        try:
            services.task_cancel(task=task)
        except DomainError as exc:
            raise domain_error(exc)
        task.refresh_from_db()
        asked = " (asked to stop at its next check)" if task.status == Task.Status.RUNNING else ""
        self.console.print(f"{task.task_id} {task.status}{asked}")

    def do_retry(self, *, brand, task_id, watch, timeout, interval, **options):
        task = self._task(brand_arg(brand), task_id)
        try:
            services.task_retry(task=task)
        except DomainError as exc:
            raise domain_error(exc)
        task.refresh_from_db()
        self.console.print(f"{task.task_id} {task.status} (attempt {task.attempts + 1} next)")
        if watch:
            self._watch(task, timeout=timeout, interval=interval)

    def _watch(self, task: Task, *, timeout: float | None, interval: float) -> None:
        """Draw the task's progress and print its timeline as it grows, until it ends."""
        if interval <= 0 or (timeout is not None and timeout < 0):
            raise CommandError("--interval must be > 0, --timeout >= 0.", returncode=2)
        deadline = None if timeout is None else time.monotonic() + timeout
        last_event = 0
        with Progress(
            TextColumn("{task.fields[name]}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
        ) as bar:
            job = bar.add_task("watch", total=100, name=task.task_id, status=task.status)
            while True:
                task.refresh_from_db()
                for event in task.events.filter(id__gt=last_event).order_by("id"):
                    bar.console.print(_event_line(event), markup=False)
                    last_event = event.pk
                bar.update(job, completed=task.progress_percentage, status=task.status)
                if task.is_terminal:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    bar.stop()
                    raise CommandError(
                        f"still {task.status} after {timeout:g} s: {self._summary(task)}",
                        returncode=EXIT_TIMEOUT,
                    )
                time.sleep(interval)
        self.console.print(self._summary(task), markup=False)
        self._outcome(task)
