"""The producer API (task_core.producer) and the Celery options of @task_type."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from megahub.errors import DomainValidationError
from task_core import producer
from task_core.models import Task
from task_core.registry import RetryPolicy, TaskType, _spec_options, get_task_type, task_type
from task_core.services import IdempotencyKeyReused
from task_core.tenancy import UnknownBrand, brand_get
from tests.factories import BrandFactory, UserFactory


@pytest.fixture
def brand(db):
    return BrandFactory(slug="humari")


@pytest.mark.parametrize("ref", ["instance", "id", "id_text", "slug"])
def test_submit_takes_the_brand_by_instance_id_or_slug(brand, ref):
    given = {"instance": brand, "id": brand.pk, "id_text": str(brand.pk), "slug": "humari"}[ref]
    task = producer.submit("noop", brand=given, context={}, priority="high")
    assert task.pk and task.brand_id == brand.pk
    assert (task.status, task.priority, task.task_type) == ("queued", "high", "noop")
    assert task.events.get(kind="created").actor == "system"


@pytest.mark.parametrize("ref", ["nope", 999999, "999999", "", None, True, "1e3", "-1"])
def test_an_unknown_brand_is_refused(brand, ref):
    with pytest.raises(UnknownBrand):
        producer.submit("noop", brand=ref)
    assert not Task.objects.for_brand(brand).exists()


def test_submit_validates_as_rest_does(brand):
    with pytest.raises(DomainValidationError) as unknown:
        producer.submit("no_such_type", brand=brand)
    assert unknown.value.error_code == "UNKNOWN_TASK_TYPE"
    with pytest.raises(DomainValidationError) as schema:
        producer.submit("seo_keyword_analysis", brand=brand, context={"keyword_ids": []})
    assert schema.value.error_code == "CONTEXT_INVALID"
    with pytest.raises(DomainValidationError) as priority:
        producer.submit("noop", brand=brand, priority="urgent")
    assert "priority" in priority.value.field_errors


def test_submit_idempotency_scheduling_creator_and_description(brand):
    user = UserFactory()
    later = timezone.now() + timedelta(hours=2)
    first = producer.submit(
        "noop", brand=brand, idempotency_key="k1", scheduled_for=later, user=user,
        description="nightly",
    )  # fmt: skip
    assert (first.created_by, first.description, first.scheduled_for) == (user, "nightly", later)
    assert first.available_at == later
    again = producer.submit("noop", brand=brand, idempotency_key="k1", scheduled_for=later)
    assert again.pk == first.pk
    with pytest.raises(IdempotencyKeyReused):
        producer.submit("sleep", brand=brand, idempotency_key="k1", context={"seconds": 1})


def test_task_type_objects_submit(brand):
    spec = get_task_type("noop")
    task = spec.submit(brand="humari", context={})
    assert isinstance(spec, TaskType) and task.task_type == "noop"
    assert producer.submit(spec, brand=brand).task_type == "noop"


def test_wait_returns_a_terminal_task_and_times_out_otherwise(brand):
    task = producer.submit("noop", brand=brand)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=task.task_id):
        producer.wait(task, timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 2
    Task.objects.for_brand(brand).filter(pk=task.pk).update(status="completed")
    assert producer.wait(task, timeout=0).status == "completed"


@pytest.mark.django_db(transaction=True)
def test_wait_sees_the_task_finish_in_another_connection():
    brand = BrandFactory()
    task = producer.submit("noop", brand=brand)

    def finish_later():
        time.sleep(0.5)
        Task.objects.for_brand(brand).filter(pk=task.pk).update(status="failed")
        connection.close()

    thread = threading.Thread(target=finish_later)
    thread.start()
    try:
        assert producer.wait(task, timeout=10).status == "failed"
    finally:
        thread.join()


def test_run_inline_runs_one_attempt_as_a_worker_would(brand):
    task = producer.submit("seo_keyword_analysis", brand=brand, context={"keyword_ids": [1, 2]})
    task = producer.run_inline(task)
    assert task.status == "completed" and task.result_data["keywords_processed"] == 2
    assert [e.kind for e in task.events.order_by("id")][-1] == "completed"


# --- @task_type options -------------------------------------------------------------------
def test_celery_options_map_onto_megahubs_policy():
    class Flaky(Exception):
        pass

    spec = _spec_options(
        "t",
        dict(
            time_limit=120, soft_time_limit=100, max_retries=7, autoretry_for=(Flaky,),
            retry_backoff=5, retry_backoff_max=60, retry_jitter=False,
        ),
    )  # fmt: skip
    assert spec == {
        "time_limit_s": 120,
        "soft_time_limit_s": 100,
        "retry": RetryPolicy(
            max_retries=7, backoff_base_s=5.0, backoff_max_s=60.0, jitter=0.0, retry_on=(Flaky,)
        ),
    }
    assert _spec_options("t", {"time_limit": 600}) == {
        "time_limit_s": 600,
        "soft_time_limit_s": 570,
    }
    assert _spec_options("t", {"soft_time_limit": 60}) == {
        "soft_time_limit_s": 60, "time_limit_s": 90,
    }  # fmt: skip
    assert _spec_options("t", {"retry_backoff": True, "retry_jitter": True})["retry"] == (
        RetryPolicy(backoff_base_s=1.0, jitter=0.25)
    )


def test_a_type_declared_with_celery_options_runs_with_them(brand):
    class Flaky(Exception):
        pass

    @task_type("test_producer_celery_flaky", max_retries=1, autoretry_for=(Flaky,), retry_backoff=3)
    def flaky(ctx):
        raise (Flaky if ctx.data.get("flaky") else KeyError)("boom")

    spec = get_task_type("test_producer_celery_flaky")
    assert spec.retry.max_retries == 1 and spec.retry.backoff_base_s == 3.0
    retried = producer.run_inline(spec.submit(brand=brand, context={"flaky": True}))
    assert (retried.status, retried.max_retries) == ("retrying", 1)
    failed = producer.run_inline(spec.submit(brand=brand, context={}))
    assert failed.status == "failed"  # not in autoretry_for: no retry


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limit": "10/m"}, "option 'rate_limit' is not supported: megahub has no per-type"),
        ({"bind": True}, "option 'bind' is not supported: the handler already receives"),
        ({"default_retry_delay": 30}, "option 'default_retry_delay' is not supported: use retry_b"),
        ({"acks_late": True}, "option 'acks_late' is not supported"),
        ({"countdown": 5}, "scheduled_for"),
        ({"retyr": RetryPolicy()}, "unknown option 'retyr'; megahub's options are"),
        ({"retry_backoff": False}, "retry_backoff=False is not supported"),
        ({"max_retries": None}, "max_retries must be an integer >= 0"),
        ({"autoretry_for": ("x",)}, "autoretry_for must be a tuple of exception classes"),
        ({"time_limit": "60"}, "time_limit must be a number of seconds"),
        ({"time_limit": 60, "time_limit_s": 60}, "give 'time_limit' or 'time_limit_s', not both"),
        ({"max_retries": 2, "retry": RetryPolicy()}, "not both"),
    ],
)
def test_other_options_are_refused_with_what_to_use_instead(options, message):
    with pytest.raises(TypeError, match="^task type refused: .*" + message.replace("(", r"\(")):

        @task_type("refused", **options)
        def refused(ctx):
            return {}

    assert get_task_type("refused") is None


def test_brand_get_is_the_one_lookup(brand):
    assert brand_get(brand) is brand
    assert brand_get(brand.pk) == brand_get(str(brand.pk)) == brand_get("humari") == brand
