"""POST /tasks/'s input and output through serializers whose fields are built once per thread:
the same validated data, the same errors and the same detail document as a fresh serializer."""

import pytest
from rest_framework.exceptions import ValidationError
from rest_framework.renderers import JSONRenderer

from task_core.api import serializers as api
from tests.factories import TaskFactory

INPUTS = [
    {"task_type": "noop"},
    {"task_type": "noop", "priority": "high", "description": "d", "context_data": {"a": [1]}},
    {"task_type": "noop", "scheduled_for": "2030-01-01T00:00:00Z"},
    {"task_type": "noop", "scheduled_for": None},
    {"task_type": 5},
    {"priority": "urgent"},
    {"task_type": "noop", "context_data": [1]},
    {"task_type": "noop", "bogus": 1, "status": "completed"},
    {"task_type": "noop", "scheduled_for": "tomorrow"},
    {"task_type": "noop", "scheduled_for": "2030-01-01T00:00:00+16:00"},
    {"task_type": "noop", "description": 5},
    {"task_type": "x" * 200},
    {},
    [],
    "text",
]


def fresh(data):
    serializer = api.TaskCreateSerializer(data=data)
    try:
        serializer.is_valid(raise_exception=True)
    except ValidationError as exc:
        return "invalid", exc.detail
    return "valid", dict(serializer.validated_data)


def reused(data):
    try:
        return "valid", dict(api.task_create_input(data))
    except ValidationError as exc:
        return "invalid", exc.detail


def test_create_input_validates_as_a_fresh_serializer_call_after_call():
    for data in INPUTS * 2:  # the second round reuses the serializer after errors
        assert repr(reused(data)) == repr(fresh(data)), data  # error codes included
    first, second = (api.task_create_input({"task_type": "noop"}) for _ in range(2))
    assert first["context_data"] == {} and first["context_data"] is not second["context_data"]


@pytest.mark.django_db
@pytest.mark.parametrize("never_run", [True, False])
def test_detail_data_renders_as_the_serializer(brand, owner, never_run):
    render = JSONRenderer().render
    for task in (TaskFactory(brand=brand, created_by=owner), TaskFactory(brand=brand)):
        expected = api.TaskDetailSerializer(task, context={"never_run": never_run}).data
        data = api.task_detail_data(task, never_run=never_run)
        assert render(data) == render(expected)
        assert data.serializer.instance is task


@pytest.mark.django_db
def test_detail_data_follows_the_registered_sections(brand, monkeypatch):
    task = TaskFactory(brand=brand)
    api.task_detail_data(task)  # fields built with the current sections
    monkeypatch.setitem(
        api.detail_sections, "extra", api.DetailSection("extra", lambda t: {"pk": t.pk})
    )
    assert api.task_detail_data(task)["extra"] == {"pk": task.pk}
