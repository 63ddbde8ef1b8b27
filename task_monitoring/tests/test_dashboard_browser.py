"""End to end in a real browser: headless Chromium logs in through the admin form, opens
/dashboard/ and checks that the charts are laid out and drawn. Screenshot in test-artifacts/."""

from pathlib import Path

import pytest
from django.utils import timezone

from task_monitoring import services
from task_monitoring.tests.factories import AlertRuleFactory, WorkerFactory
from tests.factories import MembershipFactory, TaskFactory, UserFactory

pytestmark = [pytest.mark.integration]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_operations_page_renders_its_charts_in_chromium(live_server, browser, brand, settings):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    staff = UserFactory(username="ops", is_staff=True, password="ops-password-1")
    MembershipFactory(user=staff, brand=brand, role="operator")
    now = timezone.now()
    for i in range(6):
        TaskFactory(brand=brand, status="completed", completed_at=now - timezone.timedelta(hours=i))
    TaskFactory(brand=brand, status="failed", completed_at=now)
    TaskFactory(brand=brand, status="running", task_type="seo_keyword_analysis",
                progress_percentage=60)  # fmt: skip
    TaskFactory(brand=brand, status="queued")
    WorkerFactory(hostname="celery@ops-host", rss_mb=180)
    services.alert_rule_evaluate(rule=AlertRuleFactory(brand=brand, name="Backlog", threshold=0))

    wait = WebDriverWait(browser, 30)
    browser.get(f"{live_server.url}/admin/login/?next=/dashboard/")
    browser.find_element(By.NAME, "username").send_keys("ops")
    browser.find_element(By.NAME, "password").send_keys("ops-password-1")
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait.until(ec.presence_of_element_located((By.ID, "chart-throughput")))
    assert browser.current_url.endswith("/dashboard/")
    assert "megahub operations" in browser.title

    # Laid out and drawn: each chart has a real size, bars have a height where data exists.
    charts = browser.execute_script(
        """return Array.from(document.querySelectorAll('svg.chart')).map(svg => ({
             id: svg.id,
             width: svg.getBoundingClientRect().width,
             height: svg.getBoundingClientRect().height,
             bars: svg.querySelectorAll('rect.bar').length,
             drawn: Array.from(svg.querySelectorAll('rect.bar'))
                      .filter(r => r.getBBox().height > 0).length}));"""
    )
    by_id = {c["id"]: c for c in charts}
    assert set(by_id) == {"chart-throughput", "chart-failures", "chart-queues"}
    for chart in charts:
        assert chart["width"] > 200 and chart["height"] > 40, chart
    assert by_id["chart-throughput"]["bars"] == 24 and by_id["chart-throughput"]["drawn"] >= 5
    assert by_id["chart-failures"]["drawn"] == 1
    assert by_id["chart-queues"]["drawn"] >= 2  # queued + running segments
    bar = browser.find_element(By.CSS_SELECTOR, "#running .progress > span")
    assert bar.size["width"] > 0
    assert "Backlog" in browser.find_element(By.ID, "alerts").text
    assert "celery@ops-host" in browser.find_element(By.ID, "workers").text

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
