from django.core.management.base import BaseCommand

from task_core.management import brand_arg
from task_persistence.selectors import jobs_interrupted


class Command(BaseCommand):
    help = "List interrupted jobs (automatic resumptions exhausted), oldest first."

    def add_arguments(self, parser):
        parser.add_argument("--brand", help="only this brand (id or slug)")

    def handle(self, *args, brand=None, **options):
        jobs = list(jobs_interrupted(brand=brand_arg(brand)))
        for job in jobs:
            self.stdout.write(
                f"job {job.pk}  {job.task.task_id}  brand={job.brand.slug}  "
                f"type={job.task.task_type}  items={job.processed_items}/{job.total_items}  "
                f"checkpoint={job.last_sequence}  auto_resumes={job.auto_resume_count}  "
                f"last_checkpoint_at={job.last_checkpoint_at}"
            )
        self.stdout.write(f"{len(jobs)} interrupted job(s)")
