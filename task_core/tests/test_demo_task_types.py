"""Demo and test-only task types exist only with MEGAHUB_DEMO_TASK_TYPES on; their limits hold
server-side whatever door stored the task."""

import os
import subprocess
import sys

import pytest

from task_core import execution
from task_core.models import Task
from task_core.registry import all_task_types, get_task_type
from tests.factories import TaskFactory

DEMO_TYPES = {
    "seo_keyword_analysis", "flaky_api_call", "sleep", "noop", "stuck_call",
    "seo_keyword_audit", "memory_probe",
}  # fmt: skip


def test_production_settings_leave_the_demo_types_off():
    env = {k: v for k, v in os.environ.items() if k != "MEGAHUB_DEMO_TASK_TYPES"}
    env.update(DJANGO_SETTINGS_MODULE="megahub.settings", SECRET_KEY="x" * 50, DEBUG="0")
    code = "import django; django.setup(); from django.conf import settings; " \
        "print(settings.MEGAHUB_DEMO_TASK_TYPES)"  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False", out.stderr


def test_with_the_setting_off_the_demo_types_are_absent(api, owner, brand, settings):
    settings.MEGAHUB_DEMO_TASK_TYPES = False
    listed = {t["name"] for t in api(owner, brand).get("/tasks/types/").json()}
    assert not listed & DEMO_TYPES
    assert get_task_type("memory_probe") is None
    for name, context in [
        ("memory_probe", {"mb": 1}),
        ("seo_keyword_audit", {"keyword_ids": [1], "crash_after_items": 1}),
        ("seo_keyword_analysis", {"keyword_ids": [1]}),
    ]:
        response = api(owner, brand).post(
            "/tasks/", {"task_type": name, "context_data": context}, format="json"
        )
        assert response.status_code == 400, response.content
        assert response.json()["error_code"] == "UNKNOWN_TASK_TYPE"
        assert "task_type" in response.json()["field_errors"]
    assert not Task.objects.unscoped().exists()


def test_with_the_setting_on_the_demo_types_work(api, owner, brand, settings):
    settings.MEGAHUB_DEMO_TASK_TYPES = True
    listed = {t["name"] for t in api(owner, brand).get("/tasks/types/").json()}
    assert listed >= DEMO_TYPES
    assert {t.name for t in all_task_types()} >= DEMO_TYPES
    response = api(owner, brand).post(
        "/tasks/", {"task_type": "memory_probe", "context_data": {"mb": 1}}, format="json"
    )
    assert response.status_code == 201, response.content


def test_a_stored_demo_task_is_not_run_once_the_setting_is_off(brand, settings):
    settings.MEGAHUB_DEMO_TASK_TYPES = False
    task = TaskFactory(brand=brand, task_type="memory_probe", context_data={"mb": 1},
                       status="queued")  # fmt: skip
    assert execution.task_execute(task_pk=task.pk, worker="test@host") == "failed"
    task.refresh_from_db()
    assert task.status == "failed" and "not registered" in task.error_message


def test_memory_probe_allocation_is_capped_by_its_schema(api, owner, brand):
    response = api(owner, brand).post(
        "/tasks/", {"task_type": "memory_probe", "context_data": {"mb": 2048}}, format="json"
    )
    assert response.status_code == 400, response.content
    assert response.json()["error_code"] == "CONTEXT_INVALID"


@pytest.mark.parametrize(
    "task_type,context",
    [
        ("memory_probe", {"mb": 4096}),
        ("seo_keyword_audit", {"keyword_ids": [1], "crash_after_items": 0}),
        ("seo_keyword_audit", {"keyword_ids": [1], "crash_after_items": "1"}),
    ],
)
def test_a_stored_context_beyond_the_types_limits_is_refused_at_execution(
    brand, task_type, context
):
    """A context stored without the API (admin edit, an old row) is checked again by the worker
    before the handler runs: it fails without allocating or killing anything."""
    task = TaskFactory(brand=brand, task_type=task_type, context_data=context, status="queued")
    assert execution.task_execute(task_pk=task.pk, worker="test@host") == "failed"
    task.refresh_from_db()
    assert task.status == "failed" and "CONTEXT_INVALID" in task.error_message
