from django.core.management.base import BaseCommand, CommandError

from megahub.errors import DomainError
from task_core import services


class Command(BaseCommand):
    help = "Create a brand (tenant), or show the existing one with the same slug."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--slug", help="URL-safe identifier (default: derived from the name)")

    def handle(self, *args, name, slug, **options):
        try:
            brand, created = services.brand_create(name=name, slug=slug)
        except DomainError as exc:
            raise CommandError(f"{exc.detail} {exc.field_errors or ''}")
        self.stdout.write(
            f"{'created' if created else 'exists'}: brand id={brand.id} slug={brand.slug}"
        )
