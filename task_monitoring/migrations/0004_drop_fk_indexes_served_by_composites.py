"""Drop the single-column indexes of foreign keys that a composite index already serves
(every one starts with that column), so the worker's writes per task maintain fewer indexes.

Only the indexes go: Django's own AlterField would also drop and re-add the foreign key
constraints, re-validating the whole table under lock. On PostgreSQL the indexes are dropped
CONCURRENTLY (no write lock), hence a non-atomic migration."""

import django.db.models.deletion
from django.db import migrations, models

# (index, table, column): Django's names for them.
INDEXES = [
    ("task_monitoring_taskmetric_brand_id_8c869c9d", "task_monitoring_taskmetric", '"brand_id"'),
    ("task_monitoring_taskmetric_task_id_dd919a2a", "task_monitoring_taskmetric", '"task_id"'),
]


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def drop_indexes(apps, schema_editor):
    for name, _table, _column in INDEXES:
        schema_editor.execute(f'DROP INDEX {_concurrently(schema_editor)}IF EXISTS "{name}"')


def create_indexes(apps, schema_editor):
    for name, table, column in INDEXES:
        schema_editor.execute(
            f'CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS "{name}" '
            f'ON "{table}" ({column})'
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("task_monitoring", "0003_alert_webhook_secrets_standard_webhooks"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="taskmetric",
                    name="brand",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="task_core.brand",
                    ),
                ),
                migrations.AlterField(
                    model_name="taskmetric",
                    name="task",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="metrics",
                        to="task_core.task",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_indexes, create_indexes),
            ],
        ),
    ]
