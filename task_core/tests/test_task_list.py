"""GET /tasks/ pages: the deferred join (ids first, then rows), cursors both ways in every
ordering, and the rows' JSON written into the response as the database built it."""

import json
from base64 import b64encode
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer as DRFJSONRenderer

from megahub.renderers import JSONRenderer, JSONRows
from task_core.models import Task
from tests.factories import TaskFactory


@pytest.fixture
def tasks(brand, other_brand, owner):
    """12 tasks of the brand, created_at out of id order; 3 of another brand."""
    now = timezone.now().replace(microsecond=0)
    made = []
    for i in range(12):
        task = TaskFactory(
            brand=brand,
            created_by=owner if i % 3 else None,
            status="failed" if i % 4 == 0 else "completed",
            task_type="noop" if i % 2 else "sleep",
        )
        stamp = now - timedelta(seconds=(i * 7) % 12)  # a permutation: not in id order
        Task.objects.unscoped().filter(pk=task.pk).update(created_at=stamp)
        made.append(task)
    TaskFactory.create_batch(3, brand=other_brand)
    return made


def walk(client, url, key="next"):
    pages, seen = [], set()
    while url:
        assert url not in seen
        seen.add(url)
        body = client.get(url).json()
        pages.append([row["id"] for row in body["results"]])
        url = body[key]
    return pages, body


@pytest.mark.parametrize(
    ("query", "order"),
    [
        ("", ("-id",)),
        ("ordering=id", ("id",)),
        ("ordering=created_at", ("created_at",)),
        ("ordering=-created_at", ("-created_at",)),
        ("status=failed", ("-id",)),
        ("search=noop&ordering=id", ("id",)),
    ],
)
def test_pages_forward_and_back_cover_the_brand_once(api, owner, brand, tasks, query, order):
    client = api(owner, brand)
    expected = Task.objects.for_brand(brand)
    if "status" in query:
        expected = expected.filter(status="failed")
    if "search" in query:
        expected = expected.filter(task_type__icontains="noop")
    expected_ids = list(expected.order_by(*order).values_list("id", flat=True))
    forward, last = walk(client, f"/tasks/?page_size=2&{query}")
    assert [pk for page in forward for pk in page] == expected_ids
    assert last["next"] is None and len(forward) > 1
    # Back from the last page by `previous`: every other row once, each page in the order.
    back, first = walk(client, last["previous"], key="previous")
    assert first["previous"] is None
    assert [pk for page in reversed(back) for pk in page] + forward[-1] == expected_ids


@pytest.mark.parametrize("ordering", ["created_at", "-created_at"])
def test_pages_through_tasks_created_at_the_same_instant_cover_each_once(
    api, owner, brand, ordering
):
    """Schedules fired in one dispatch share created_at: the pages still hold every task
    once, in created_at then id order, forward and back."""
    stamp = timezone.now().replace(microsecond=0)
    made = TaskFactory.create_batch(9, brand=brand)
    Task.objects.unscoped().filter(pk__in=[t.pk for t in made[:7]]).update(created_at=stamp)
    client = api(owner, brand)
    sign = "-" if ordering.startswith("-") else ""
    expected_ids = list(
        Task.objects.for_brand(brand).order_by(ordering, f"{sign}id").values_list("id", flat=True)
    )
    forward, last = walk(client, f"/tasks/?page_size=2&ordering={ordering}")
    assert [pk for page in forward for pk in page] == expected_ids
    back, first = walk(client, last["previous"], key="previous")
    assert first["previous"] is None
    assert [pk for page in reversed(back) for pk in page] + forward[-1] == expected_ids


def test_a_page_is_one_query_that_reads_ids_from_the_brand_then_the_rows(api, owner, brand, tasks):
    client = api(owner, brand)
    client.get("/tasks/")  # membership cached
    cursor = client.get("/tasks/?page_size=5").json()["next"]
    with CaptureQueriesContext(connection) as captured:
        body = client.get(cursor).json()
    task_sql = [q["sql"] for q in captured.captured_queries if "task_core_task" in q["sql"]]
    assert len(task_sql) == 1
    assert len(body["results"]) == 5
    if connection.vendor == "postgresql":
        sql = task_sql[0]
        inner = sql[sql.index("FROM (") : sql.index(") k ")]
        # The page's ids come from the brand's rows only: the brand and the keyset in the
        # subquery, its LIMIT the page's.
        assert '"brand_id" = ' in inner and '"id" < ' in inner and "LIMIT 6" in inner


def test_foreign_rows_never_appear_through_the_join(api, owner, brand, other_brand, tasks):
    foreign = set(Task.objects.for_brand(other_brand).values_list("id", flat=True))
    pages, _ = walk(api(owner, brand), "/tasks/?page_size=4")
    assert foreign.isdisjoint(pk for page in pages for pk in page)


# --- the renderer -----------------------------------------------------------------------------
ROWS = [
    {"id": 1, "name": 'zoë \u2028 \u2029 "q" \\ \t \x01', "on": True, "none": None},
    {"id": 2, "name": "🚀", "on": False, "none": None},
]


def texts():
    return [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in ROWS]


def test_spliced_rows_are_the_bytes_drf_writes():
    page = {"next": "http://testserver/tasks/?cursor=cD0x", "previous": None}
    spliced = JSONRenderer().render({**page, "results": JSONRows(texts(), verbatim=True)})
    assert spliced == DRFJSONRenderer().render({**page, "results": ROWS})
    empty = JSONRenderer().render({**page, "results": JSONRows([], verbatim=True)})
    assert empty == DRFJSONRenderer().render({**page, "results": []})


@pytest.mark.parametrize("verbatim", [True, False])
def test_rows_are_rendered_anew_when_they_cannot_be_spliced(verbatim):
    page = {"next": None, "previous": None, "results": JSONRows(texts(), verbatim=verbatim)}
    indented = JSONRenderer().render(page, "application/json; indent=2")
    assert indented == DRFJSONRenderer().render(
        {**page, "results": ROWS}, "application/json; indent=2"
    )
    assert JSONRenderer().render(page) == DRFJSONRenderer().render({**page, "results": ROWS})
    # Results not last: DRF's own rendering of the decoded rows.
    reordered = {"results": JSONRows(texts(), verbatim=verbatim), "next": None}
    assert JSONRenderer().render(reordered) == DRFJSONRenderer().render(
        {"results": ROWS, "next": None}
    )


def test_json_rows_read_as_the_decoded_rows():
    rows = JSONRows(texts(), verbatim=True)
    assert len(rows) == 2 and rows[0] == ROWS[0] and list(rows) == ROWS and rows == ROWS


def test_the_list_answers_indented_json_when_asked(api, owner, brand, tasks):
    response = api(owner, brand).get("/tasks/", HTTP_ACCEPT="application/json; indent=2")
    assert response.status_code == 200
    assert response.content.startswith(b'{\n  "next"')
    assert [r["id"] for r in response.json()["results"]] == sorted(
        (t.pk for t in tasks), reverse=True
    )


def test_a_page_whose_filter_matches_nothing_is_empty(brand, tasks):
    from task_core import selectors

    nothing = Task.objects.for_brand(brand).filter(pk__in=[]).order_by("-id")
    assert list(selectors.task_list_rows(nothing)[:6]) == []
    some = list(selectors.task_list_rows(Task.objects.for_brand(brand).order_by("-id"))[:3])
    assert [row["id"] for row in some] == sorted((t.pk for t in tasks), reverse=True)[:3]
    assert all(json.loads(row["row"])["id"] == row["id"] for row in some)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_the_page_statement_is_prepared_once_per_connection(api, owner, brand, other_brand, tasks):
    from django.conf import settings

    if settings.DATABASES["default"]["OPTIONS"].get("prepare_threshold") is None:
        pytest.skip("DB_PREPARE_THRESHOLD=off")
    client = api(owner, brand)
    for _ in range(3):
        assert client.get("/tasks/?page_size=4").status_code == 200
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%) k JOIN %"],
        )
        assert cursor.fetchone()[0] == 1


SCHEDULES_BY_NEXT_RUN = "/tasks/scheduled/periodic-tasks/?ordering=next_run_at"


@pytest.mark.parametrize(
    ("url", "position"),
    [
        ("/tasks/?ordering=created_at", "2026-01-01 00:00:00+00:00"),  # the value alone
        ("/tasks/?ordering=created_at", "2026-01-01 00:00:00+00:00|abc"),
        ("/tasks/?ordering=created_at", "2026-01-01 00:00:00+00:00|0"),
        ("/tasks/?ordering=created_at", "2026-01-01 00:00:00+00:00|\uff11"),
        ("/tasks/?ordering=created_at", "not-a-date|1"),
        ("/tasks/?ordering=created_at", "5"),  # a NULL (the id alone): created_at has none
        (SCHEDULES_BY_NEXT_RUN, "None|1"),  # what a NULL position used to be written as
        (SCHEDULES_BY_NEXT_RUN, "abc"),  # a NULL's position is an id
        (SCHEDULES_BY_NEXT_RUN, "0"),
        (SCHEDULES_BY_NEXT_RUN, "\uff11"),
        (SCHEDULES_BY_NEXT_RUN, "|"),
    ],
)
def test_a_forged_pair_position_is_a_400_naming_cursor(api, owner, brand, url, position):
    cursor = b64encode(urlencode({"p": position}).encode()).decode()
    response = api(owner, brand).get(f"{url}&cursor={cursor}")
    assert response.status_code == 400, response.content[:200]
    assert "cursor" in response.json()["field_errors"]


@pytest.mark.parametrize(
    ("params", "plain"),
    [
        ({}, True),
        ({"page_size": "5", "cursor": "cD0x", "brand": "1"}, True),
        ({"ordering": "id"}, True),
        ({"ordering": "-id"}, True),
        ({"ordering": "created_at"}, False),
        ({"ordering": ""}, False),
        ({"status": "failed"}, False),
        ({"search": ""}, False),
        ({"format": "json"}, False),
        ({"page_size": "5\x00"}, False),
    ],
)
def test_only_an_unfiltered_page_by_id_is_plain(params, plain):
    from django.http import QueryDict

    from task_core.selectors import task_list_is_plain

    query = QueryDict(mutable=True)
    query.update(params)
    assert task_list_is_plain(query) is (plain and connection.vendor == "postgresql")
    query.setlist("ordering", ["id", "id"])  # a parameter given twice is never plain
    assert not task_list_is_plain(query)


def _offset_cursor(position):
    return b64encode(urlencode({"o": "1", "p": str(position)}).encode()).decode()


@pytest.mark.parametrize("query", ["", "ordering=id", "ordering=-id"])
def test_the_plain_statement_answers_as_the_orm_query(api, owner, brand, tasks, query, monkeypatch):
    """Every page of the plain list (kept statement), forward and back and from a cursor with
    an offset, is the same bytes as the ORM query's (filter backends, compiled per request)."""
    from task_core import selectors

    client = api(owner, brand)
    pks = sorted(t.pk for t in tasks)

    def both(url):
        plain = client.get(url)
        with monkeypatch.context() as patch:
            patch.setattr(selectors, "task_list_is_plain", lambda params: False)
            orm = client.get(url)
        assert plain.status_code == orm.status_code == 200, plain.content[:300]
        assert plain.content == orm.content
        return plain.json()

    urls = [f"/tasks/?page_size=5&{query}", f"/tasks/?cursor={_offset_cursor(pks[6])}&{query}"]
    for start in urls:
        for key in ("next", "previous"):
            url, seen = start, 0
            while url:
                body = both(url)
                seen += len(body["results"])
                assert {row["brand"]["id"] for row in body["results"]} <= {brand.pk}
                url = body[key]
            assert seen <= len(tasks)


def test_only_offset_free_plain_statements_are_kept(api, owner, brand, tasks):
    """The kept plain statements are one per (direction, keyset, page size): the offsets a
    forged cursor may carry (up to DRF's cutoff) are answered but never kept."""
    from task_core import selectors

    if connection.vendor != "postgresql":
        pytest.skip("the plain statement is PostgreSQL's (SQLite lists through the ORM)")
    client, pks = api(owner, brand), sorted(t.pk for t in tasks)
    assert client.get("/tasks/?page_size=5").status_code == 200
    kept = dict(selectors._PLAIN_SQL)
    for offset in (1, 2, 3):
        forged = b64encode(urlencode({"o": str(offset), "p": str(pks[-1])}).encode()).decode()
        response = client.get(f"/tasks/?page_size=5&cursor={forged}")
        assert response.status_code == 200
        assert [row["id"] for row in response.json()["results"]][:1] == [pks[-2 - offset]]
    assert kept == selectors._PLAIN_SQL
