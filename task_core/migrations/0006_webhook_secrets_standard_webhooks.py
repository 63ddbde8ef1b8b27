"""Brand webhook secrets in the Standard Webhooks format: "whsec_" + base64 of the key. An
existing secret keeps its key (its UTF-8 bytes), so a receiver can still verify with it."""

from django.db import migrations

from megahub.webhooks import convert_stored_secrets


def to_standard_webhooks(apps, schema_editor):
    convert_stored_secrets(apps.get_model("task_core", "Webhook"), "secret")


class Migration(migrations.Migration):
    dependencies = [
        ("task_core", "0005_webhookdelivery_plural_name"),
    ]

    operations = [
        migrations.RunPython(to_standard_webhooks, migrations.RunPython.noop),
    ]
