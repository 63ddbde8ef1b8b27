"""Every request example of the seed document (tests/contract/megahub-tasks-api.md, a verbatim
copy of the API contract), replayed as written, answers with success; the task it creates, once
run, has the seed's example shape (brand {id, name}, created_by, progress_percentage,
result_data, metrics {execution_time_ms, memory_usage_mb, cost_usd}); and an error has the
seed's error shape."""

import json
import re
from pathlib import Path

import pytest

from task_core import execution
from task_core.models import Task
from task_persistence.tests.helpers import make_job
from tests.factories import TaskFactory

pytestmark = pytest.mark.django_db
SEED = Path(__file__).with_name("megahub-tasks-api.md").read_text(encoding="utf-8")
REQUEST_LINE = re.compile(r"^(?:(GET|POST)\s+)?(?:https://[^/\s]+)?(/tasks/\S*)", re.MULTILINE)
# POSTs the seed lists without a body, and the smallest body each needs.
BODY_THE_SEED_LEAVES_OUT = {
    "/tasks/scheduled/periodic-tasks/validate-cron/": {"cron_expression": "0 9 * * 1-5"}
}


def seed_requests() -> list[tuple[str, str, dict | None]]:
    """(method, path, body) of every request in the seed's code blocks, in order."""
    requests = []
    for block in re.findall(r"```(?:http|bash|)\n(.*?)```", SEED, re.DOTALL):
        lines = block.splitlines()
        for index, line in enumerate(lines):
            match = REQUEST_LINE.match(line.strip())
            if not match:
                continue
            method, path = match.group(1) or "GET", match.group(2)
            body = None
            if method == "POST" and index + 1 < len(lines) and lines[index + 1].startswith("{"):
                text = []
                for json_line in lines[index + 1 :]:
                    text.append(re.sub(r"\s+#.*$", "", json_line))  # the seed's comments
                    if json_line.startswith("}"):
                        break
                body = json.loads("\n".join(text))
            requests.append((method, path, body))
    return requests


def test_the_seed_lists_the_requests_this_test_replays():
    requests = seed_requests()
    paths = {path for _, path, _ in requests}
    assert len(requests) >= 25
    assert {"/tasks/persistent-jobs/persistent-jobs/{id}/resume/", "/tasks/scheduled/"} <= paths
    bodies = [body for _, _, body in requests if body]
    assert [b["task_type"] for b in bodies] == ["seo_keyword_analysis", "daily_seo_report"]


def assert_seed_task_shape(task: dict):
    example = json.loads(re.search(r"### Tâche Complète\n```json\n(.*?)```", SEED, re.S)[1])
    assert set(example) <= set(task), set(example) - set(task)
    assert set(task["brand"]) == {"id", "name"}
    assert set(task["created_by"]) == {"id", "username"}
    assert isinstance(task["progress_percentage"], int)
    assert set(example["metrics"]) <= set(task["metrics"])
    assert isinstance(task["metrics"]["execution_time_ms"], int)
    assert isinstance(task["metrics"]["memory_usage_mb"], int | float)
    assert isinstance(task["metrics"]["cost_usd"], float)
    assert isinstance(task["result_data"], dict)


def test_every_request_example_of_the_seed_succeeds(api, owner, brand):
    client = api(owner, brand)
    requests = seed_requests()
    # The endpoint lists name POSTs without a body; the seed's workflow gives their bodies.
    bodies = {path: body for method, path, body in requests if body is not None}
    bodies.update(BODY_THE_SEED_LEAVES_OUT)

    # Workflow step 1 first, run as a worker would: the other examples read its progress.
    created = client.post("/tasks/", bodies["/tasks/"], format="json")
    assert created.status_code == 201, created.content
    assert created.json()["context_data"] == bodies["/tasks/"]["context_data"]
    task_pk = created.json()["id"]
    Task.objects.unscoped().filter(pk=task_pk).update(
        status="queued"
    )  # published on commit in production
    execution.task_execute(task_pk=task_pk, worker="seed@host")

    failed = TaskFactory(brand=brand, status="failed", attempts=1, task_type="noop")
    paused = make_job(brand, status="paused", last_sequence=1)
    ids = {
        "/tasks/{id}/": task_pk,
        "/tasks/{id}/retry/": failed.pk,
        "/tasks/persistent-jobs/persistent-jobs/{id}/resume/": paused.pk,
    }
    answered = []
    for method, path, body in requests:
        url = path.replace("{id}", str(ids.get(path)))
        if path.endswith("/resume/"):  # the seed resumes twice: each time the job is paused
            Task.objects.unscoped().filter(pk=paused.task_id).update(status="paused")
        if method == "GET":
            response = client.get(url)
        else:
            response = client.post(url, body or bodies.get(path, {}), format="json")
        assert response.status_code in (200, 201), (method, url, response.content[:400])
        answered.append((method, path, response.status_code))
        if (method, path) == ("GET", "/tasks/{id}/"):
            task = response.json()
            assert_seed_task_shape(task)
            assert task["status"] == "completed" and task["progress_percentage"] == 100
            assert task["result_data"]["keywords_processed"] == 5
        if (method, path) == ("POST", "/tasks/scheduled/periodic-tasks/"):
            assert response.json()["task_type"] == "daily_seo_report"
    assert ("POST", "/tasks/", 201) in answered
    assert ("POST", "/tasks/scheduled/periodic-tasks/", 201) in answered
    assert ("POST", "/tasks/persistent-jobs/persistent-jobs/{id}/resume/", 200) in answered
    assert ("POST", "/tasks/{id}/retry/", 200) in answered


def test_the_seeds_error_example_is_the_error_shape(api, owner, brand):
    example = json.loads(re.search(r"### Format d'Erreurs\n```json\n(.*?)```", SEED, re.S)[1])
    response = api(owner, brand).get("/tasks/999999/")
    assert response.status_code == 404
    body = response.json()
    assert set(body) == set(example)
    assert body["error_code"] == example["error_code"] == "TASK_NOT_FOUND"
    assert body["detail"] == example["detail"] and body["field_errors"] == {}
