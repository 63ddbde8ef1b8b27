from django.core.management.base import BaseCommand, CommandError

from megahub.errors import DomainError
from task_core.management import brand_arg
from task_persistence.models import PersistentJob
from task_persistence.selectors import jobs_interrupted
from task_persistence.services import job_resume


class Command(BaseCommand):
    help = "Resume jobs from their last checkpoint: the given job ids, or every interrupted job."

    def add_arguments(self, parser):
        parser.add_argument("job_ids", nargs="*", type=int, help="job ids")
        parser.add_argument("--all-interrupted", action="store_true", help="every interrupted job")
        parser.add_argument("--brand", help="with --all-interrupted: only this brand (id or slug)")

    def handle(self, *args, job_ids, all_interrupted, brand=None, **options):
        if bool(job_ids) == bool(all_interrupted):
            raise CommandError("give job ids, or --all-interrupted (not both)")
        if all_interrupted:
            jobs = list(jobs_interrupted(brand=brand_arg(brand)))
        else:
            found = PersistentJob.objects.unscoped().select_related("task").in_bulk(job_ids)
            missing = [str(pk) for pk in job_ids if pk not in found]
            if missing:
                raise CommandError(f"no job with id {', '.join(missing)}")
            jobs = [found[pk] for pk in job_ids]
        refused = 0
        for job in jobs:
            try:
                job_resume(job=job, actor="system:command")
                self.stdout.write(f"resumed job {job.pk} ({job.task.task_id})")
            except DomainError as exc:
                refused += 1
                self.stderr.write(f"job {job.pk}: {exc.error_code}: {exc.detail}")
        if refused:
            raise CommandError(f"{refused} job(s) could not be resumed")
        self.stdout.write(f"{len(jobs)} job(s) resumed")
