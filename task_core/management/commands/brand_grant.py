from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from task_core import services
from task_core.management import brand_arg
from task_core.models import BrandMembership


class Command(BaseCommand):
    help = "Grant a user a role (viewer, operator, admin) in a brand."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("brand", help="brand id or slug")
        parser.add_argument("role", choices=BrandMembership.Role.values)

    def handle(self, *args, username, brand, role, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        target = brand_arg(brand)
        services.membership_grant(user=user, brand=target, role=role)
        self.stdout.write(f"{username} is now {role} in {target.name} (id={target.id})")
