"""Alert rule webhook secrets in the Standard Webhooks format: "whsec_" + base64 of the key
(up to 200 characters now). An existing secret keeps its key (its UTF-8 bytes), so a receiver
can still verify with it."""

from django.db import migrations, models

import megahub.webhooks
import task_monitoring.models
from megahub.webhooks import convert_stored_secrets


def to_standard_webhooks(apps, schema_editor):
    convert_stored_secrets(apps.get_model("task_monitoring", "AlertRule"), "webhook_secret")


class Migration(migrations.Migration):
    dependencies = [
        ("task_monitoring", "0002_platform_loop"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alertrule",
            name="webhook_secret",
            field=models.CharField(
                default=task_monitoring.models.new_webhook_secret,
                max_length=200,
                validators=[megahub.webhooks.validate_signing_secret],
            ),
        ),
        migrations.RunPython(to_standard_webhooks, migrations.RunPython.noop),
    ]
