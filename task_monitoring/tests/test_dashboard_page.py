"""The operations page /dashboard/ (server-rendered, staff only)."""

from django.test import Client
from django.utils import timezone

from task_monitoring import services
from task_monitoring.tests.factories import AlertRuleFactory, WorkerFactory
from tests.factories import BrandFactory, MembershipFactory, TaskFactory, UserFactory


def login(user):
    client = Client()
    client.force_login(user)
    return client


def test_dashboard_needs_a_staff_login(owner):
    response = Client().get("/dashboard/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert login(owner).get("/dashboard/").status_code == 302  # member, but not staff


def test_staff_sees_charts_of_their_brands_only(brand, other_brand):
    staff = UserFactory(username="ops", is_staff=True)
    MembershipFactory(user=staff, brand=brand, role="viewer")
    now = timezone.now()
    TaskFactory(brand=brand, status="completed", completed_at=now, task_type="noop")
    TaskFactory(brand=brand, status="failed", completed_at=now, task_type="noop")
    TaskFactory(brand=brand, status="running", task_type="mine_running", progress_percentage=40)
    TaskFactory(brand=other_brand, status="running", task_type="foreign_running")
    TaskFactory(brand=brand, status="queued")
    WorkerFactory(hostname="fleet@host")
    rule = AlertRuleFactory(brand=brand, name="Backlog too deep", threshold=0)
    services.alert_rule_evaluate(rule=rule)
    foreign_rule = AlertRuleFactory(brand=other_brand, name="Foreign rule", threshold=-1)
    services.alert_rule_evaluate(rule=foreign_rule)

    html = login(staff).get("/dashboard/").content.decode()
    assert html.count('<svg class="chart"') == 3
    assert 'id="chart-throughput"' in html and 'id="chart-failures"' in html
    assert html.count('class="bar"') >= 24 * 2 + 1
    assert "mine_running" in html and "foreign_running" not in html
    assert 'aria-valuenow="40"' in html
    assert "Backlog too deep" in html and "Foreign rule" not in html
    assert "fleet@host" in html
    assert "Acme" not in html  # the brand switcher lists only the user's brands


def test_superuser_can_pick_any_brand(brand, other_brand):
    admin = UserFactory(username="root", is_staff=True, is_superuser=True)
    TaskFactory(brand=other_brand, status="running", task_type="foreign_running")
    client = login(admin)
    assert "foreign_running" in client.get("/dashboard/").content.decode()
    html = client.get(f"/dashboard/?brand={brand.pk}").content.decode()
    assert "foreign_running" not in html


def test_a_brand_outside_the_users_scope_falls_back_to_their_brands(brand):
    staff = UserFactory(username="ops2", is_staff=True)
    MembershipFactory(user=staff, brand=brand)
    stranger = BrandFactory(name="Stranger")
    TaskFactory(brand=stranger, status="running", task_type="stranger_running")
    html = login(staff).get(f"/dashboard/?brand={stranger.pk}").content.decode()
    assert "stranger_running" not in html


def test_fair_share_shows_waiting_and_running_per_brand_side_by_side(brand, other_brand):
    from task_core.models import BrandLimit

    staff = UserFactory(username="ops", is_staff=True)
    MembershipFactory(user=staff, brand=brand, role="viewer")
    for _ in range(3):
        TaskFactory(brand=brand, status="pending", waiting_reason="brand_window")
    TaskFactory(brand=brand, status="pending")  # on its way to the broker: not waiting
    TaskFactory(brand=brand, status="queued")
    TaskFactory(brand=brand, status="running")
    TaskFactory(brand=brand, status="running")
    TaskFactory(brand=other_brand, status="pending", waiting_reason="brand_rate")
    BrandLimit.objects.create(brand=brand, task_type="noop", max_running=2)

    html = login(staff).get("/dashboard/").content.decode()
    section = html[html.index('id="fair-share"') :]
    section = section[: section.index("</section>")]
    assert section.count('class="fair-share-row"') == 1  # the other brand is not the user's
    row = section[section.index('class="fair-share-row"') :]
    assert "<td>Humari</td><td>3</td><td>1</td><td>2</td>" in row
    assert "noop: max 2 running" in row
