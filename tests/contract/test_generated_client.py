"""A client generated from /openapi.json by a real generator (openapi-python-client) works
without reading the docs: with a token and a brand it creates a task, fetches it and lists it,
and it is told the brand header is required."""

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from rest_framework_simplejwt.tokens import AccessToken

pytestmark = [pytest.mark.integration]
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture
def generated_client(live_server, tmp_path, monkeypatch):
    schema = tmp_path / "openapi.json"
    schema.write_bytes(httpx.get(f"{live_server.url}/openapi.json", timeout=120).content)
    package = tmp_path / "megahub_client"
    result = subprocess.run(
        [str(GENERATOR), "generate", "--path", str(schema), "--meta", "none",
         "--output-path", str(package)],
        capture_output=True, text=True, timeout=300,
        # Its post-generation hooks run ruff (a dev dependency, beside the generator).
        env={**os.environ, "PATH": f"{GENERATOR.parent}{os.pathsep}{os.environ['PATH']}"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout + result.stderr, result.stdout + result.stderr
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("megahub_client")
    for name in [m for m in sys.modules if m.startswith("megahub_client")]:
        del sys.modules[name]


def test_generated_client_creates_fetches_and_lists_a_task(
    generated_client, live_server, member, brand, other_brand
):
    from megahub_client.api.tasks import tasks_create, tasks_list, tasks_retrieve
    from megahub_client.models import (
        TaskCreateRequest,
        TaskCreateRequestContextData,
        TaskDetail,
        TaskPriorityEnum,
        TaskTypeEnum,
    )

    # The brand is a required argument of every brand-scoped call: nobody has to guess it.
    assert inspect.signature(tasks_list.sync).parameters["x_brand_id"].default is inspect._empty
    client = generated_client.AuthenticatedClient(
        base_url=live_server.url, token=str(AccessToken.for_user(member))
    )
    body = TaskCreateRequest(
        task_type=TaskTypeEnum.SEO_KEYWORD_ANALYSIS,
        priority=TaskPriorityEnum.HIGH,
        description="from a generated client",
        context_data=TaskCreateRequestContextData.from_dict(
            {"keyword_ids": [1, 2, 3], "analysis_depth": "full"}
        ),
    )
    created = tasks_create.sync_detailed(client=client, body=body, x_brand_id=brand.pk)
    assert created.status_code == 201, created.content
    task = created.parsed
    assert isinstance(task, TaskDetail)
    assert (task.brand.id, task.brand.name) == (brand.pk, brand.name)
    assert task.created_by.username == member.username and task.priority == TaskPriorityEnum.HIGH

    fetched = tasks_retrieve.sync(client=client, id=task.id, x_brand_id=brand.pk)
    assert isinstance(fetched, TaskDetail) and fetched.task_id == task.task_id
    assert fetched.context_data == body.context_data.to_dict()

    page = tasks_list.sync(client=client, x_brand_id=brand.pk, search=task.task_id)
    assert [row.id for row in page.results] == [task.id]
    # The same client in the other brand does not see it.
    other = tasks_list.sync(client=client, x_brand_id=other_brand.pk)
    assert task.id not in [row.id for row in other.results]
    missing = tasks_retrieve.sync(client=client, id=task.id, x_brand_id=other_brand.pk)
    assert (missing.error_code, missing.field_errors.to_dict()) == ("TASK_NOT_FOUND", {})
