"""Tenancy fails closed: brand-owned rows are read only through a named scope, and the base
viewset's scoping points cannot be overridden."""

import pytest
from django.db.models import Count
from rest_framework import mixins

from task_core.api.tenancy import BrandScopedViewSet
from task_core.models import Task, TaskEvent
from task_core.tenancy import Role, UnscopedQuery
from tests.factories import TaskFactory

UNSCOPED_READS = {
    "iterate": lambda: list(Task.objects.filter(status="queued")),
    "get": lambda: Task.objects.get(task_type="noop"),
    "first": lambda: Task.objects.order_by("id").first(),
    "count": lambda: Task.objects.count(),
    "exists": lambda: Task.objects.filter(task_type="noop").exists(),
    "values": lambda: list(Task.objects.values_list("id", flat=True)),
    "aggregate": lambda: Task.objects.aggregate(n=Count("id")),
    "update": lambda: Task.objects.filter(task_type="noop").update(description="x"),
    "delete": lambda: Task.objects.filter(task_type="noop").delete(),
    "iterator": lambda: list(Task.objects.all().iterator()),
    "in_bulk": lambda: Task.objects.in_bulk([1]),
    "bool": lambda: bool(Task.objects.all()),
}


@pytest.mark.parametrize("read", UNSCOPED_READS.values(), ids=UNSCOPED_READS.keys())
def test_a_brand_owned_model_queried_without_a_brand_raises(brand, read):
    TaskFactory(brand=brand)
    with pytest.raises(UnscopedQuery):
        read()
    assert Task.objects.unscoped().filter(description="x").count() == 0  # nothing changed


def test_a_named_scope_reads_only_what_it_names(brand, other_brand):
    own, foreign = TaskFactory(brand=brand), TaskFactory(brand=other_brand)
    assert list(Task.objects.for_brand(brand)) == [own]
    assert list(Task.objects.filter(brand=other_brand)) == [foreign]  # filtered by brand
    assert list(Task.objects.filter(brand_id__in=[brand.pk])) == [own]
    assert set(Task.objects.unscoped()) == {own, foreign}
    # A scope survives chaining.
    assert Task.objects.for_brand(brand).filter(task_type="noop").order_by("id").count() == 1


def test_rows_reached_through_an_object_are_scoped_by_it(brand):
    task = TaskFactory(brand=brand)
    TaskEvent.objects.create(brand=brand, task=task, kind="created", to_status="pending")
    assert task.events.count() == 1


def test_creating_a_row_needs_no_scope(brand):
    task = Task.objects.create(brand=brand, task_type="noop")
    assert Task.objects.for_brand(brand).get() == task


@pytest.mark.parametrize("name", ["get_queryset", "get_object", "get_permissions"])
def test_the_base_viewset_scoping_points_cannot_be_overridden(name):
    with pytest.raises(TypeError, match=name):
        type("Leaky", (mixins.ListModelMixin, BrandScopedViewSet), {name: lambda self: None})


def test_roles_rank_viewer_operator_admin():
    assert Role.allows(Role.ADMIN, Role.OPERATOR) and Role.allows(Role.OPERATOR, Role.OPERATOR)
    assert not Role.allows(Role.VIEWER, Role.OPERATOR)
    assert not Role.allows(None, Role.VIEWER) and not Role.allows("owner", Role.VIEWER)
