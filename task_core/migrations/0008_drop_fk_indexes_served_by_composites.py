"""Drop the single-column indexes of foreign keys that a composite index already serves
(every one starts with that column), and the ``varchar_pattern_ops`` copy of the unique
task_id index that Django adds on PostgreSQL for LIKE 'prefix%' lookups, which nothing makes
(the API and the admin search task_id by equality or by icontains, which it cannot serve):
the worker's two task updates and two events per task maintain fewer indexes.

Only the indexes go: Django's own AlterField would also drop and re-add the foreign key
constraints, re-validating the whole table under lock. On PostgreSQL the indexes are dropped
CONCURRENTLY (no write lock), hence a non-atomic migration."""

import django.db.models.deletion
from django.db import migrations, models

# (index, table, indexed column): Django's names for them.
INDEXES = [
    ("task_core_task_brand_id_53b0ef22", "task_core_task", '"brand_id"'),
    ("task_core_taskevent_task_id_03d1d6a6", "task_core_taskevent", '"task_id"'),
]
# Only PostgreSQL has it (Django's schema editor for PostgreSQL adds it).
LIKE_INDEX = ("task_core_task_task_id_0c2d5fab_like", "task_core_task", '"task_id" varchar_pattern_ops')


def _concurrently(schema_editor) -> str:
    return "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""


def _indexes(schema_editor) -> list[tuple[str, str, str]]:
    postgresql = schema_editor.connection.vendor == "postgresql"
    return INDEXES + ([LIKE_INDEX] if postgresql else [])


def drop_indexes(apps, schema_editor):
    for name, _table, _column in _indexes(schema_editor):
        schema_editor.execute(f'DROP INDEX {_concurrently(schema_editor)}IF EXISTS "{name}"')


def create_indexes(apps, schema_editor):
    for name, table, column in _indexes(schema_editor):
        schema_editor.execute(
            f'CREATE INDEX {_concurrently(schema_editor)}IF NOT EXISTS "{name}" '
            f'ON "{table}" ({column})'
        )


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("task_core", "0007_fair_share_brand_limits"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="task",
                    name="brand",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="tasks",
                        to="task_core.brand",
                    ),
                ),
                migrations.AlterField(
                    model_name="taskevent",
                    name="task",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="task_core.task",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunPython(drop_indexes, create_indexes),
            ],
        ),
    ]
