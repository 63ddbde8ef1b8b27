"""Admin of persistent jobs: progress, checkpoint inlines, resume/pause actions."""

import pytest
from django.contrib.auth import get_user_model

from task_core.models import Task
from task_persistence.tests.helpers import make_job, reload, run

pytestmark = pytest.mark.django_db
URL = "/admin/task_persistence/persistentjob/"


@pytest.fixture
def admin_client(client):
    user = get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(user)
    return client


def test_job_list_and_detail_show_progress_and_checkpoints(admin_client, brand):
    job = make_job(brand, ids=250, checkpoint_every_items=100)
    run(job)
    page = admin_client.get(URL).content.decode()
    assert '<progress value="100"' in page and "250 / 250" in page
    detail = admin_client.get(f"{URL}{job.pk}/change/").content.decode()
    assert "Checkpoints" in detail and "#3 at" in detail
    assert admin_client.get("/admin/task_persistence/checkpoint/").status_code == 200


def test_admin_actions_pause_and_resume(admin_client, brand):
    running, paused = make_job(brand, status="running"), make_job(brand, status="paused")
    admin_client.post(URL, {"action": "pause_jobs", "_selected_action": [running.pk]})
    assert reload(running).pause_requested
    admin_client.post(URL, {"action": "resume_jobs", "_selected_action": [paused.pk, running.pk]})
    assert Task.objects.unscoped().get(pk=paused.task_id).status == "pending"
    assert (
        Task.objects.unscoped().get(pk=running.task_id).status == "running"
    )  # refused, not resumable
