"""/tasks/persistent-jobs/ over HTTP: roles, tenancy, bad input, and the error format."""

import pytest
from django.core.management import CommandError, call_command

from task_core.models import Task
from task_persistence import services
from task_persistence.models import Checkpoint, PersistentJob
from task_persistence.tests.helpers import make_job, reload, run

pytestmark = pytest.mark.django_db
BASE = "/tasks/persistent-jobs/persistent-jobs/"
CHECKPOINTS = "/tasks/persistent-jobs/checkpoints/"
PAYLOAD = {
    "task_type": "seo_keyword_audit",
    "description": "Audit 3 keywords",
    "context_data": {"keyword_ids": [1, 2, 3]},
    "checkpoint_every_items": 50,
    "auto_resume_max": 2,
}


def assert_error(response, status, code):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error_code"] == code and body["detail"]
    return body


def test_operator_creates_a_job_with_its_task(api, member, brand):
    response = api(member, brand).post(BASE, PAYLOAD, format="json")
    assert response.status_code == 201
    body = response.json()
    job = PersistentJob.objects.unscoped().get(pk=body["id"])
    assert job.brand == brand and job.task.task_type == "seo_keyword_audit"
    assert body["task"] == job.task_id and body["status"] in ("pending", "queued")
    assert (body["checkpoint_every_items"], body["checkpoint_every_seconds"]) == (50, 5.0)
    assert body["auto_resume_max"] == 2 and body["processed_items"] == 0
    assert body["state"] == {} and body["total_items"] is None


def test_create_is_idempotent_with_the_same_key(api, member, brand):
    client = api(member, brand)
    first = client.post(BASE, PAYLOAD, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    second = client.post(BASE, PAYLOAD, format="json", HTTP_IDEMPOTENCY_KEY="k1")
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


@pytest.mark.parametrize(
    ("change", "code", "field"),
    [
        ({"task_type": "noop"}, "TASK_TYPE_NOT_RESUMABLE", "task_type"),
        ({"task_type": "nope"}, "UNKNOWN_TASK_TYPE", "task_type"),
        ({"context_data": {}}, "CONTEXT_INVALID", "context_data"),
        ({"state": {"blob": "x" * 70_000}}, "CHECKPOINT_TOO_LARGE", "state"),
        ({"state": [1]}, "VALIDATION_ERROR", "state"),
        ({"checkpoint_every_items": 0}, "VALIDATION_ERROR", "checkpoint_every_items"),
        ({"processed_items": 5}, "VALIDATION_ERROR", "processed_items"),
        ({"brand": 99}, "VALIDATION_ERROR", "brand"),
    ],
)
def test_bad_create_is_a_400_and_creates_nothing(api, member, brand, change, code, field):
    body = assert_error(
        api(member, brand).post(BASE, {**PAYLOAD, **change}, format="json"), 400, code
    )
    assert field in body["field_errors"]
    assert not Task.objects.unscoped().exists() and not PersistentJob.objects.unscoped().exists()


def test_lists_and_details_never_show_another_brands_jobs(api, member, brand, other_brand):
    mine, theirs = make_job(brand), make_job(other_brand)
    run(mine)
    run(theirs)
    client = api(member, brand)
    assert [j["id"] for j in client.get(BASE).json()["results"]] == [mine.pk]
    assert client.get(f"{BASE}{mine.pk}/").status_code == 200
    assert_error(client.get(f"{BASE}{theirs.pk}/"), 404, "JOB_NOT_FOUND")
    for verb in ("resume", "pause", "cancel"):
        assert_error(client.post(f"{BASE}{theirs.pk}/{verb}/"), 404, "JOB_NOT_FOUND")
    checkpoints = client.get(f"{CHECKPOINTS}").json()["results"]
    assert checkpoints and {c["job"] for c in checkpoints} == {mine.pk}
    assert client.get(f"{CHECKPOINTS}", {"job": theirs.pk}).json()["results"] == []
    foreign_cp = Checkpoint.objects.unscoped().filter(job=theirs).first()
    assert_error(client.get(f"{CHECKPOINTS}{foreign_cp.pk}/"), 404, "CHECKPOINT_NOT_FOUND")
    theirs_paused = make_job(other_brand, status="paused")
    assert client.get(f"{BASE}resumable/").json()["results"] == []
    assert Task.objects.unscoped().get(pk=theirs_paused.task_id).status == "paused"


def test_checkpoint_timeline_of_a_job(api, member, brand):
    job = make_job(brand, ids=250, checkpoint_every_items=100)
    other = make_job(brand, ids=5)
    run(job)
    run(other)
    rows = api(member, brand).get(f"{CHECKPOINTS}", {"job": job.pk, "ordering": "id"})
    results = rows.json()["results"]
    assert [(c["sequence"], c["items_processed"]) for c in results] == [(1, 100), (2, 200),
                                                                        (3, 250)]  # fmt: skip
    assert set(results[0]) == {"id", "job", "sequence", "items_processed", "state",
                               "size_bytes", "attempt", "created_at"}  # fmt: skip
    assert_error(api(member, brand).get(f"{CHECKPOINTS}", {"job": "abc"}), 400, "VALIDATION_ERROR")


def test_detail_shows_progress_and_last_state(api, member, brand):
    job = make_job(brand, ids=250, checkpoint_every_items=100)
    run(job)
    body = api(member, brand).get(f"{BASE}{job.pk}/").json()
    assert (body["processed_items"], body["total_items"], body["progress_percentage"]) == (
        250, 250, 100,
    )  # fmt: skip
    assert body["status"] == "completed" and body["last_sequence"] == 3
    assert body["state"]["insights"] >= 0 and body["last_checkpoint_at"]


def test_resumable_lists_paused_interrupted_and_failed_with_checkpoint(api, member, brand):
    paused = make_job(brand, status="paused")
    interrupted = make_job(brand, status="interrupted")
    failed_cp = make_job(brand, status="failed", last_sequence=2)
    make_job(brand, status="failed")  # no checkpoint: a retry, not a resume
    make_job(brand, status="running", last_sequence=2)
    ids = {j["id"] for j in api(member, brand).get(f"{BASE}resumable/").json()["results"]}
    assert ids == {paused.pk, interrupted.pk, failed_cp.pk}


@pytest.mark.parametrize("status", ["paused", "interrupted"])
def test_resume_moves_the_job_back_to_pending(api, member, brand, status):
    job = make_job(brand, status=status)
    response = api(member, brand).post(f"{BASE}{job.pk}/resume/")
    assert response.status_code == 200 and response.json()["status"] == "pending"
    event = Task.objects.unscoped().get(pk=job.task_id).events.order_by("id").last()
    assert (event.kind, event.actor) == ("resumed", "user:member")


@pytest.mark.parametrize("status", ["running", "completed", "queued", "failed", "cancelled"])
def test_resume_of_a_job_that_is_not_resumable_is_409(api, member, brand, status):
    job = make_job(brand, status=status)
    assert_error(api(member, brand).post(f"{BASE}{job.pk}/resume/"), 409, "JOB_NOT_RESUMABLE")
    assert Task.objects.unscoped().get(pk=job.task_id).status == status


def test_resume_of_failed_job_with_checkpoint(api, member, brand):
    job = make_job(brand, status="failed", last_sequence=1)
    assert api(member, brand).post(f"{BASE}{job.pk}/resume/").status_code == 200
    assert Task.objects.unscoped().get(pk=job.task_id).status == "pending"


@pytest.mark.parametrize("status", ["queued", "running"])
def test_pause_is_requested(api, member, brand, status):
    job = make_job(brand, status=status)
    response = api(member, brand).post(f"{BASE}{job.pk}/pause/")
    assert response.status_code == 202 and response.json()["pause_requested"] is True
    assert Task.objects.unscoped().get(pk=job.task_id).status == status  # until its next checkpoint


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "paused"])
def test_pause_of_a_finished_or_paused_job_is_409(api, member, brand, status):
    job = make_job(brand, status=status)
    assert_error(api(member, brand).post(f"{BASE}{job.pk}/pause/"), 409, "JOB_NOT_PAUSABLE")
    job = reload(job)
    assert not job.pause_requested


def test_cancel(api, member, brand):
    queued, running, done = (make_job(brand, status=s) for s in ("queued", "running", "completed"))
    client = api(member, brand)
    assert client.post(f"{BASE}{queued.pk}/cancel/").json()["status"] == "cancelled"
    response = client.post(f"{BASE}{running.pk}/cancel/")
    assert (
        response.status_code == 202
        and Task.objects.unscoped().get(pk=running.task_id).cancel_requested
    )
    assert_error(client.post(f"{BASE}{done.pk}/cancel/"), 409, "JOB_NOT_CANCELLABLE")


def test_tasks_is_resumable_filter(api, member, brand):
    job = make_job(brand)
    plain = Task.objects.create(brand=brand, task_type="noop")
    client = api(member, brand)

    def ids(flag):
        results = client.get("/tasks/", {"is_resumable": flag}).json()["results"]
        return {t["id"] for t in results}

    assert ids("true") == {job.task_id} and ids("false") == {plain.pk}
    detail = client.get(f"/tasks/{job.task_id}/").json()
    assert detail["persistent_job"]["id"] == job.pk
    assert client.get(f"/tasks/{plain.pk}/").json()["persistent_job"] is None


def test_endpoints_are_in_the_schema(api, member, brand):
    paths = api(member, brand).get("/openapi.json").json()["paths"]
    for path in (
        "/tasks/persistent-jobs/persistent-jobs/",
        "/tasks/persistent-jobs/persistent-jobs/{id}/resume/",
        "/tasks/persistent-jobs/persistent-jobs/resumable/",
        "/tasks/persistent-jobs/checkpoints/",
    ):
        assert path in paths  # fmt: skip


def test_commands_list_and_resume_interrupted_jobs(brand, capsys):
    job = make_job(brand, status="interrupted")
    call_command("jobs_list_interrupted", "--brand", brand.slug)
    assert f"job {job.pk} " in capsys.readouterr().out
    call_command("jobs_resume", "--all-interrupted")
    assert Task.objects.unscoped().get(pk=job.task_id).status == "pending"
    with pytest.raises(CommandError, match="no job with id 999999"):
        call_command("jobs_resume", "999999")
    with pytest.raises(CommandError, match="could not be resumed"):
        call_command("jobs_resume", str(job.pk))
    with pytest.raises(CommandError):
        call_command("jobs_resume")
    with pytest.raises(CommandError):
        call_command("checkpoints_prune", "--keep", "-1")
    with pytest.raises(CommandError, match="No brand"):
        call_command("jobs_list_interrupted", "--brand", "nope")


def test_prune_command(brand, capsys):
    job = make_job(brand, ids=250, checkpoint_every_items=100)
    run(job)
    services.checkpoints_prune(keep=10)
    call_command("checkpoints_prune", "--keep", "1")
    assert "deleted 2 checkpoint(s)" in capsys.readouterr().out


def test_the_seeds_paths_are_served_and_the_app_root_lists_them(api, member, brand):
    client = api(member, brand)
    job = make_job(brand, status="paused", last_sequence=1)
    assert client.get(f"{BASE}resumable/").json()["results"][0]["id"] == job.pk
    assert client.post(f"{BASE}{job.pk}/resume/").status_code == 200
    root = client.get("/tasks/persistent-jobs/")
    assert root.status_code == 200
    assert root.json() == {
        "persistent-jobs": f"http://testserver{BASE}",
        "checkpoints": f"http://testserver{CHECKPOINTS}",
    }
    # The paths one level up are not the seed's: they are not served.
    assert_error(client.get(f"/tasks/persistent-jobs/{job.pk}/"), 404, "NOT_FOUND")
