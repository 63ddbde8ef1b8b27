from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from task_persistence.services import checkpoints_prune


class Command(BaseCommand):
    help = "Delete all but the last N checkpoints of every completed job."

    def add_arguments(self, parser):
        parser.add_argument(
            "--keep",
            type=int,
            default=None,
            help="checkpoints kept per job "
            f"(default JOB_CHECKPOINTS_KEEP={settings.JOB_CHECKPOINTS_KEEP})",
        )

    def handle(self, *args, keep, **options):
        if keep is not None and keep < 0:
            raise CommandError("--keep must be 0 or more")
        deleted = checkpoints_prune(keep=keep)
        self.stdout.write(f"deleted {deleted} checkpoint(s)")
