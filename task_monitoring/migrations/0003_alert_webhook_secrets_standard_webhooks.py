"""Alert rule webhook secrets in the Standard Webhooks format: "whsec_" + base64 of the key
(up to 200 characters now). An existing secret keeps its key (its UTF-8 bytes), so a receiver
can still verify with it."""

from django.db import migrations, models

import task_monitoring.models
from megahub.webhooks import SECRET_PREFIX, standard_secret


def to_standard_webhooks(apps, schema_editor):
    AlertRule = apps.get_model("task_monitoring", "AlertRule")
    rules = AlertRule.objects.exclude(webhook_secret__startswith=SECRET_PREFIX)
    for rule in rules.only("pk", "webhook_secret"):
        rule.webhook_secret = standard_secret(rule.webhook_secret)
        rule.save(update_fields=["webhook_secret"])


class Migration(migrations.Migration):
    dependencies = [
        ("task_monitoring", "0002_platform_loop"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alertrule",
            name="webhook_secret",
            field=models.CharField(
                default=task_monitoring.models.new_webhook_secret, max_length=200
            ),
        ),
        migrations.RunPython(to_standard_webhooks, migrations.RunPython.noop),
    ]
