"""End to end in a real browser: headless Chromium logs in through the admin form, opens
/dashboard/ and checks that the charts are laid out and drawn, that the panels link to the admin
pages, that text is legible and that the panels refresh in place. Screenshot in test-artifacts/
(and docs/img/operations.png when MEGAHUB_DOCS_SCREENSHOT=1)."""

import json
import os
from pathlib import Path
from urllib.parse import urlparse

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse
from django.utils import timezone

from task_monitoring import dashboard, services
from task_monitoring.tests.factories import AlertRuleFactory, WorkerFactory
from tests.factories import MembershipFactory, TaskFactory, UserFactory

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


def test_operations_page_renders_its_charts_in_chromium(
    live_server, browser, brand, other_brand, settings, monkeypatch
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings.SESSION_COOKIE_SECURE = settings.CSRF_COOKIE_SECURE = False  # plain http here
    staff = UserFactory(username="ops", is_staff=True, password="ops-password-1")
    MembershipFactory(user=staff, brand=brand, role="operator")
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_task", "view_alert"]))
    now = timezone.now()
    for i in range(6):
        TaskFactory(brand=brand, status="completed", completed_at=now - timezone.timedelta(hours=i))
    failing = TaskFactory(brand=brand, status="failed", completed_at=now, task_type="send_report",
                          error_message="SMTP 554: relay denied <b>twice</b>")  # fmt: skip
    TaskFactory(brand=brand, status="failed", completed_at=now - timezone.timedelta(hours=2),
                task_type="send_report", error_message="timeout")  # fmt: skip
    TaskFactory(brand=other_brand, status="failed", completed_at=now, task_type="foreign_job",
                error_message="foreign error")  # fmt: skip
    TaskFactory(brand=brand, status="pending", scheduled_for=now.replace(year=2030),
                available_at=now.replace(year=2030))  # fmt: skip
    monkeypatch.setattr(dashboard, "REFRESH_SECONDS", 2)
    running = TaskFactory(brand=brand, status="running", task_type="seo_keyword_analysis",
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
    assert by_id["chart-failures"]["drawn"] == 2  # two hours with failures
    assert by_id["chart-queues"]["drawn"] >= 2  # queued + running segments
    bar = browser.find_element(By.CSS_SELECTOR, "#running .progress > span")
    assert bar.size["width"] > 0
    assert "Backlog" in browser.find_element(By.ID, "alerts").text
    assert "celery@ops-host" in browser.find_element(By.ID, "workers").text

    # Queue depth is due work only: queued + running, not the task scheduled for 2030.
    queue_total = browser.execute_script(
        """return Array.from(document.querySelectorAll('#chart-queues rect.bar'))
                 .reduce((n, r) => n + Number(r.dataset.value), 0);"""
    )
    assert queue_total == 2

    # Recent failures: grouped by type, escaped error, only this user's brands.
    failures = browser.find_element(By.ID, "recent-failures").text
    assert "send_report" in failures and "SMTP 554: relay denied <b>twice</b>" in failures
    assert "foreign_job" not in failures and "foreign error" not in failures
    assert browser.find_element(By.CSS_SELECTOR, "#recent-failures .count").text == "2"

    # Platform health: one light per check, each red/amber/green.
    lights = browser.execute_script(
        "return Array.from(document.querySelectorAll('#health li.health-row'))"
        ".map(li => li.dataset.colour);"
    )
    assert len(lights) == 5 and set(lights) <= {"green", "amber", "red"}

    # Alerts and running jobs link to their admin pages.
    alert_link = browser.find_element(By.CSS_SELECTOR, "#alerts a.admin-link")
    assert "/admin/task_monitoring/alert/" in alert_link.get_attribute("href")
    running_link = browser.find_element(By.CSS_SELECTOR, "#running a.admin-link")
    assert running_link.get_attribute("href").endswith(
        reverse("admin:task_core_task_change", args=[running.pk])
    )

    # Legible: every visible text renders at 11 px or more, chart labels included.
    too_small = browser.execute_script(
        """const small = [];
           for (const el of document.querySelectorAll('body *')) {
             if (!el.childNodes.length || el.closest('title')) continue;
             const own = Array.from(el.childNodes)
                              .some(n => n.nodeType === 3 && n.textContent.trim());
             if (!own) continue;
             const rect = el.getBoundingClientRect();
             if (!rect.width) continue;
             let px = parseFloat(getComputedStyle(el).fontSize);
             const svg = el.closest('svg');
             if (svg) px = px * svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
             if (px < 11) small.push(el.tagName + ':' + el.textContent.trim().slice(0, 20)
                                     + ':' + px);
           }
           return small;"""
    )
    assert too_small == []
    # No empty half-page at 1400x1000: the panels reach down the first screen.
    bottom = browser.execute_script(
        "return Math.max(...Array.from(document.querySelectorAll('main section'))"
        ".map(s => s.getBoundingClientRect().bottom));"
    )
    assert bottom > 700, bottom

    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "dashboard.png"
    assert browser.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    if os.environ.get("MEGAHUB_DOCS_SCREENSHOT"):
        browser.save_screenshot(str(ROOT / "docs" / "img" / "operations.png"))

    # Auto-refresh without a full reload: a new failure shows up, the window's state survives.
    browser.execute_script("window.notReloaded = true;")
    TaskFactory(brand=brand, status="failed", completed_at=timezone.now(), task_type="late_comer",
                error_message="arrived after load")  # fmt: skip
    wait.until(lambda d: "late_comer" in d.find_element(By.ID, "recent-failures").text)
    assert browser.execute_script("return window.notReloaded === true;")

    # Nothing is loaded from outside the server.
    hosts = set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith("http"):
                hosts.add(urlparse(url).netloc)
    assert hosts == {urlparse(live_server.url).netloc}

    # Click a failing task's link and land on its admin page.
    link = browser.find_element(
        By.CSS_SELECTOR,
        f"#recent-failures a[href$='{reverse('admin:task_core_task_change', args=[failing.pk])}']",
    )
    link.click()
    wait.until(ec.url_contains(reverse("admin:task_core_task_change", args=[failing.pk])))
    assert str(failing.task_id) in browser.page_source
