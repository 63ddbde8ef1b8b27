"""End to end in a real browser: headless Chromium opens /docs/, authorizes with a token and a
brand through Swagger UI's "Authorize", runs "Try it out" on GET /tasks/ and gets the brand's
tasks (200). It also checks that /docs/ and /redoc/ load nothing from another origin."""

import json
from pathlib import Path

import pytest
from rest_framework_simplejwt.tokens import AccessToken

from tests.factories import BrandFactory, MembershipFactory, TaskFactory

pytestmark = [pytest.mark.integration]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def _loaded_urls(browser) -> list[str]:
    """URLs the page fetched (a request its Content-Security-Policy blocked never left)."""
    sent, blocked = {}, set()
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        params = message.get("params", {})
        if message["method"] == "Network.requestWillBeSent":
            sent[params["requestId"]] = params["request"]["url"]
        elif message["method"] == "Network.loadingFailed" and params.get("blockedReason"):
            blocked.add(params["requestId"])
    return [url for request_id, url in sent.items() if request_id not in blocked]


def test_swagger_authorize_then_try_it_out_lists_the_brands_tasks(
    live_server, browser, brand, other_brand, member
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    # Not brand 1: the header's example value must not be what makes the call work.
    if brand.pk == 1:
        brand = BrandFactory(name="Third", slug="third")
        MembershipFactory(user=member, brand=brand, role="viewer")
    mine = TaskFactory(brand=brand, description="visible in swagger")
    TaskFactory(brand=other_brand, description="the other brand's")
    wait = WebDriverWait(browser, 30)
    browser.get(f"{live_server.url}/docs/")
    wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button.authorize"))).click()

    def authorize(scheme: str, value: str):
        container = wait.until(
            ec.presence_of_element_located(
                (By.XPATH, f"//div[@class='auth-container'][.//h4//*[text()='{scheme}']]")
            )
        )
        container.find_element(By.CSS_SELECTOR, "input").send_keys(value)
        container.find_element(By.CSS_SELECTOR, "button.authorize").click()

    authorize("jwtAuth", str(AccessToken.for_user(member)))
    authorize("brandHeader", str(brand.pk))
    browser.find_element(By.CSS_SELECTOR, "button.btn-done").click()

    operation = wait.until(ec.presence_of_element_located((By.ID, "operations-tasks-tasks_list")))
    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-tasks-tasks_list .try-out__btn"))
    ).click()
    wait.until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, "#operations-tasks-tasks_list button.execute"))
    ).click()
    status = wait.until(
        ec.presence_of_element_located(
            (
                By.CSS_SELECTOR,
                "#operations-tasks-tasks_list .live-responses-table tbody .response-col_status",
            )
        )
    )
    body = browser.find_element(
        By.CSS_SELECTOR,
        "#operations-tasks-tasks_list .live-responses-table .response-col_description pre",
    ).text
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "swagger-try-it-out.png"))
    assert status.get_attribute("textContent").strip().startswith("200"), body[:500]
    results = json.loads(body)["results"]
    assert [row["id"] for row in results] == [mine.pk]
    curl = browser.find_element(By.CSS_SELECTOR, "#operations-tasks-tasks_list .curl-command").text
    assert f"X-Brand-ID: {brand.pk}" in curl


def test_docs_pages_load_nothing_from_another_origin(live_server, browser, db):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    for page, ready in (("/docs/", ".swagger-ui .opblock"), ("/redoc/", "[data-section-id]")):
        browser.get(f"{live_server.url}{page}")
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, ready)))
        urls = [u for u in _loaded_urls(browser) if u.startswith("http")]
        assert urls, page
        outside = [u for u in urls if not u.startswith(live_server.url)]
        assert outside == [], (page, outside)
