import os
from datetime import timedelta

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand
from rest_framework_simplejwt.tokens import AccessToken

from task_core import services


class Command(BaseCommand):
    help = "Create demo brands and users; print the credentials and a ready-to-paste curl line."

    def add_arguments(self, parser):
        parser.add_argument(
            "--base-url",
            default=os.environ.get(
                "MEGAHUB_URL", f"http://127.0.0.1:{os.environ.get('PORT', '8000')}"
            ),
        )
        parser.add_argument("--password", default=os.environ.get("DEMO_PASSWORD", "megahub-demo"))
        parser.add_argument("--quiet", action="store_true", help="create only, print nothing")

    def handle(self, *args, base_url, password, quiet, **options):
        User = get_user_model()
        brand, _ = services.brand_create(name="Humari", slug="humari")
        other, _ = services.brand_create(name="Acme Outdoor", slug="acme-outdoor")
        demo, _ = User.objects.get_or_create(
            username="demo", defaults={"email": "demo@example.com"}
        )
        demo.set_password(password)
        demo.is_staff = True  # may open the admin and the operations page for its brands
        demo.save()
        demo.user_permissions.set(
            Permission.objects.filter(content_type__app_label__in=["task_core"])
        )
        services.membership_grant(user=demo, brand=brand, role="admin")
        services.membership_grant(user=demo, brand=other, role="viewer")
        admin, _ = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@example.com"}
        )
        admin.set_password(password)
        admin.is_staff = admin.is_superuser = True
        admin.save()
        if quiet:
            return
        token = AccessToken.for_user(demo)
        token.set_exp(lifetime=timedelta(hours=12))  # long enough to play with the printed line
        curl = (
            f"curl -sS -X POST {base_url}/tasks/ -H 'Authorization: Bearer {token}' "
            f"-H 'X-Brand-ID: {brand.id}' -H 'Content-Type: application/json' "
            """-d '{"task_type": "seo_keyword_analysis", "description": "Analyser 10 mots-cles", """
            """"context_data": {"keyword_ids": [1,2,3,4,5,6,7,8,9,10], """
            """"analysis_depth": "full"}}'"""
        )
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "megahub demo ready",
                    f"  API user : demo / {password}  (admin of brand {brand.name}, id={brand.id};"
                    f" viewer of {other.name}, id={other.id})",
                    f"  Superuser: admin / {password}  ({base_url}/admin/)",
                    f"  Docs     : {base_url}/docs/   Health: {base_url}/health/ready/",
                    "  Create a task (token valid 12 h):",
                    f"  {curl}",
                    f"  Then: curl -sS {base_url}/tasks/ -H 'Authorization: Bearer {token}'"
                    f" -H 'X-Brand-ID: {brand.id}'",
                    "",
                ]
            )
        )
