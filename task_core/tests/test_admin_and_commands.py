"""manage.py commands and the Django admin."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone

from task_core.models import Brand, BrandMembership, Task
from tests.factories import BrandFactory, MembershipFactory, TaskFactory, UserFactory


def test_brand_create_is_idempotent(db, capsys):
    call_command("brand_create", "Humari Shop")
    call_command("brand_create", "Humari Shop")
    assert Brand.objects.filter(slug="humari-shop").count() == 1
    assert "exists" in capsys.readouterr().out


def test_brand_grant_sets_and_replaces_a_role(db):
    brand = BrandFactory(slug="humari")
    UserFactory(username="martin")
    call_command("brand_grant", "martin", "humari", "viewer")
    call_command("brand_grant", "martin", str(brand.pk), "operator")
    assert (
        BrandMembership.objects.unscoped().get(user__username="martin", brand=brand).role
        == "operator"
    )


@pytest.mark.parametrize(
    "args,message",
    [(["ghost", "humari", "viewer"], "No user"), (["martin", "nope", "viewer"], "No brand")],
)
def test_brand_grant_refuses_unknown_names(db, args, message):
    BrandFactory(slug="humari")
    UserFactory(username="martin")
    with pytest.raises(CommandError, match=message):
        call_command("brand_grant", *args)


def test_task_enqueue_creates_tasks_through_the_service(db):
    brand = BrandFactory(slug="humari")
    call_command("task_enqueue", "humari", "seo_keyword_analysis",
                 "--context", '{"keyword_ids": [1, 2]}', "--count", "3")  # fmt: skip
    assert Task.objects.filter(brand=brand, task_type="seo_keyword_analysis").count() == 3
    assert set(Task.objects.unscoped().values_list("status", flat=True)) == {"queued"}


@pytest.mark.parametrize(
    "args,message",
    [
        (["humari", "rm_rf"], "UNKNOWN_TASK_TYPE"),
        (["humari", "noop", "--context", "{bad"], "not valid JSON"),
        (["humari", "seo_keyword_analysis", "--context", "{}"], "CONTEXT_INVALID"),
        (["humari", "noop", "--scheduled-for", "tomorrow"], "ISO datetime"),
        (["nobody", "noop"], "No brand"),
    ],
)
def test_task_enqueue_bad_input_is_a_clear_error(db, args, message):
    BrandFactory(slug="humari")
    with pytest.raises(CommandError, match=message):
        call_command("task_enqueue", *args)
    assert not Task.objects.unscoped().exists()


def test_seed_demo_prints_credentials_and_a_curl_line(db, capsys):
    call_command("seed_demo")
    out = capsys.readouterr().out
    assert "demo / megahub-demo" in out and "curl -sS -X POST" in out and "X-Brand-ID" in out
    demo = get_user_model().objects.get(username="demo")
    assert demo.check_password("megahub-demo") and demo.is_staff
    call_command("seed_demo", "--quiet")  # idempotent
    assert Brand.objects.filter(slug="humari").count() == 1


def test_check_services_reports_an_unreachable_broker(db, settings, capsys):
    settings.CELERY_BROKER_URL = "amqp://guest:guest@127.0.0.1:1//"
    from celery import current_app

    current_app.conf.broker_write_url = "amqp://guest:guest@127.0.0.1:1//"
    saved = (current_app._pool, current_app.amqp._producer_pool)
    current_app._pool = current_app.amqp._producer_pool = None
    try:
        with pytest.raises(CommandError, match="not reachable"):
            call_command("check_services")
    finally:
        current_app.conf.broker_write_url = None
        current_app._pool, current_app.amqp._producer_pool = saved
    assert "rabbitmq-server -detached" in capsys.readouterr().err


# --- admin ------------------------------------------------------------------------------------
@pytest.fixture
def staff_of_brand(db):
    brand = BrandFactory(name="Humari")
    user = UserFactory(username="staffer")
    user.is_staff = True
    user.save()
    from django.contrib.auth.models import Permission

    user.user_permissions.set(Permission.objects.filter(content_type__app_label="task_core"))
    MembershipFactory(user=user, brand=brand, role="operator")
    return user, brand


def test_admin_staff_sees_only_their_brands_tasks(client, staff_of_brand):
    user, brand = staff_of_brand
    mine = TaskFactory(brand=brand, description="mine-visible")
    TaskFactory(brand=BrandFactory(), description="foreign-hidden")
    client.force_login(user)
    page = client.get("/admin/task_core/task/").content.decode()
    assert mine.task_id in page
    assert Task.objects.unscoped().exclude(brand=brand).get().task_id not in page
    foreign = Task.objects.unscoped().exclude(brand=brand).get()
    assert client.get(f"/admin/task_core/task/{foreign.pk}/change/").status_code in (302, 404)


def test_admin_actions_retry_and_cancel_call_the_services(client, staff_of_brand):
    user, brand = staff_of_brand
    failed = TaskFactory(brand=brand, status="failed")
    queued = TaskFactory(brand=brand, status="queued")
    done = TaskFactory(brand=brand, status="completed")
    client.force_login(user)
    client.post("/admin/task_core/task/",
                {"action": "retry_tasks", "_selected_action": [failed.pk, done.pk]})  # fmt: skip
    client.post(
        "/admin/task_core/task/", {"action": "cancel_tasks", "_selected_action": [queued.pk]}
    )
    statuses = dict(Task.objects.unscoped().values_list("pk", "status"))
    assert statuses == {failed.pk: "pending", queued.pk: "cancelled", done.pk: "completed"}
    assert failed.events.filter(kind="retry_requested", actor="user:staffer").exists()


def test_superuser_admin_sees_every_brand(admin_client, db):
    tasks = [TaskFactory(brand=BrandFactory()) for _ in range(3)]
    page = admin_client.get("/admin/task_core/task/").content.decode()
    assert all(t.task_id in page for t in tasks)


def test_admin_task_page_shows_metrics_cost_and_a_timeline_to_the_second(client, staff_of_brand):
    from task_core import producer

    user, brand = staff_of_brand
    task = producer.submit("seo_keyword_analysis", brand=brand, context={"keyword_ids": [1, 2]})
    client.force_login(user)
    before = client.get(f"/admin/task_core/task/{task.pk}/change/").content.decode()
    assert "no attempt measured yet" in before
    task = producer.run_inline(task, worker="admin-test@host")
    page = client.get(f"/admin/task_core/task/{task.pk}/change/").content.decode()
    assert "Metrics (per attempt)" in page and "admin-test@host" in page
    assert '<table class="task-metrics">' in page and "<th>CPU ms</th>" in page
    # 0.0001 USD per keyword reported by the handler, plus its CPU time at 0.0004 USD/s
    assert "Cost (USD)" in page and "+ reported 0.000200)" in page
    times = re.findall(r"\b\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\b", page)
    events = list(task.events.order_by("id"))
    local = [timezone.localtime(e.created_at).strftime("%Y-%m-%d %H:%M:%S") for e in events]
    assert set(local) <= set(times) and len(events) >= 3


def test_admin_index_names_webhook_deliveries(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert "Webhook deliveries" in page and "deliverys" not in page
