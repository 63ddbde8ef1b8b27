"""Keyset pages ordered by a field that can be NULL (a schedule's next_run_at: NULL when paused
or finished): NULLs sort as greater than every value, a NULL position round-trips in the cursor,
and no row is skipped or repeated across the NULLs, forward and back."""

from datetime import timedelta

import pytest
from django.utils import timezone

from task_scheduling import services
from task_scheduling.models import PeriodicSchedule

URL = "/tasks/scheduled/periodic-tasks/"


@pytest.fixture
def schedules(brand):
    """8 schedules: 4 paused (next_run_at NULL), 2 sharing a time, ids not in time order."""
    now = timezone.now().replace(microsecond=0)
    stamps = [None, now + timedelta(hours=3), None, now + timedelta(hours=1), None,
              now + timedelta(hours=1), now + timedelta(hours=2), None]  # fmt: skip
    made = []
    for i, stamp in enumerate(stamps):
        schedule = services.schedule_create(
            brand=brand, name=f"s{i}", task_type="noop", cron_expression="30 2 * * *"
        )
        PeriodicSchedule.objects.unscoped().filter(pk=schedule.pk).update(next_run_at=stamp)
        made.append((stamp, schedule.pk))
    return made


def expected(schedules, descending):
    """NULLs greater than every value; the id breaks ties in the ordering's direction."""
    far = timezone.now() + timedelta(days=3650)
    return [
        pk
        for stamp, pk in sorted(
            schedules, key=lambda s: (s[0] is None, s[0] or far, s[1]), reverse=descending
        )
    ]


def walk(client, url, key):
    pages, seen = [], set()
    while url:
        assert url not in seen, "a cursor led back to a page already seen"
        seen.add(url)
        response = client.get(url)
        assert response.status_code == 200, response.content[:300]
        body = response.json()
        pages.append([row["id"] for row in body["results"]])
        url = body[key]
    return pages, body


@pytest.mark.parametrize("ordering", ["next_run_at", "-next_run_at"])
@pytest.mark.parametrize("page_size", [1, 2, 3])
def test_pages_cross_the_nulls_once_each_way(api, owner, brand, schedules, ordering, page_size):
    client = api(owner, brand)
    ids = expected(schedules, descending=ordering.startswith("-"))
    forward, last = walk(client, f"{URL}?ordering={ordering}&page_size={page_size}", "next")
    assert [pk for page in forward for pk in page] == ids
    back, first = walk(client, last["previous"], "previous")
    assert first["previous"] is None
    assert [pk for page in reversed(back) for pk in page] + forward[-1] == ids


@pytest.mark.parametrize("ordering", ["queue_wait_ms", "-queue_wait_ms", "memory_usage_mb"])
def test_metric_pages_cross_null_numbers_once(api, owner, brand, ordering):
    """A nullable integer or float ordering (a metric's queue wait, memory) the same way."""
    from task_monitoring.tests.factories import MetricFactory

    field = ordering.lstrip("-")
    values = [None, 30, None, 10, 30, None, 20]
    made = [(v, MetricFactory(task__brand=brand, **{field: v}).pk) for v in values]
    client = api(owner, brand)
    url = f"/tasks/monitoring/metrics/?ordering={ordering}&page_size=2"
    forward, last = walk(client, url, "next")
    ids = [
        pk
        for v, pk in sorted(
            made, key=lambda m: (m[0] is None, m[0] or 0, m[1]), reverse=ordering[0] == "-"
        )
    ]
    assert [pk for page in forward for pk in page] == ids
    back, _ = walk(client, last["previous"], "previous")
    assert [pk for page in reversed(back) for pk in page] + forward[-1] == ids
