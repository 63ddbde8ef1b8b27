"""Worker health: heartbeat rows, offline detection, workers/ and workers/overview/."""

from types import SimpleNamespace

from task_monitoring import services, workers
from task_monitoring.models import Worker
from task_monitoring.tests.factories import WorkerFactory, stale

URL = "/tasks/monitoring/workers/"


def test_heartbeat_upserts_the_worker(db, settings):
    kwargs = dict(hostname="w1@host", pid=42, queues=["default"], concurrency=4, pool_pids=[43],
                  active_tasks=1, processed=10, rss_mb=120.5, loadavg=[0.5, 0.4, 0.3])  # fmt: skip
    services.worker_heartbeat_record(**kwargs)
    services.worker_heartbeat_record(**{**kwargs, "processed": 11})
    worker = Worker.objects.get()
    assert worker.processed == 11 and worker.concurrency == 4 and worker.rss_mb == 120.5
    assert worker.heartbeat_interval_s == settings.WORKER_HEARTBEAT_SECONDS


def test_a_silent_worker_is_offline_after_the_allowance(api, owner, brand, settings):
    settings.WORKER_OFFLINE_AFTER_SECONDS = 30
    WorkerFactory(hostname="alive@h", last_heartbeat_at=stale(5))
    WorkerFactory(hostname="silent@h", last_heartbeat_at=stale(31))
    WorkerFactory(hostname="stopped@h", stopped_at=stale(1))
    rows = api(owner, brand).get(URL).json()["results"]
    assert [(r["hostname"], r["status"], r["online"]) for r in rows] == [
        ("alive@h", "online", True),
        ("silent@h", "offline", False),
        ("stopped@h", "stopped", False),
    ]


def test_overview_counts_and_per_queue_consumers(api, owner, brand):
    WorkerFactory(hostname="a@h", queues=["default", "system"], concurrency=2, active_tasks=1,
                  rss_mb=100)  # fmt: skip
    WorkerFactory(hostname="b@h", queues=["default"], concurrency=4, active_tasks=3, rss_mb=50)
    WorkerFactory(hostname="c@h", queues=["long"], last_heartbeat_at=stale(3600))
    data = api(owner, brand).get(f"{URL}overview/").json()
    assert data["workers"] == {"total": 3, "online": 2, "offline": 1}
    assert data["concurrency"] == 6 and data["active_tasks"] == 4 and data["rss_mb"] == 150.0
    assert (
        data["queues"]["default"]["workers"] == 2 and data["queues"]["default"]["concurrency"] == 6
    )
    assert "long" not in data["queues"]  # its only consumer is offline


def test_any_member_sees_the_fleet_but_needs_a_valid_brand(
    api, owner, outsider, brand, other_brand
):
    worker = WorkerFactory()
    assert api(owner, brand).get(f"{URL}{worker.pk}/").json()["hostname"] == worker.hostname
    assert len(api(outsider, other_brand).get(URL).json()["results"]) == 1
    assert api(owner).get(URL).json()["error_code"] == "BRAND_REQUIRED"
    assert api(outsider, brand).get(URL).json()["error_code"] == "BRAND_FORBIDDEN"
    response = api(owner, brand).get(f"{URL}99999/")
    assert response.status_code == 404 and response.json()["error_code"] == "WORKER_NOT_FOUND"
    assert api(owner, brand).delete(f"{URL}{worker.pk}/").status_code == 405


def test_worker_rows_carry_no_brand_data(api, owner, brand):
    WorkerFactory()
    row = api(owner, brand).get(URL).json()["results"][0]
    assert not {"brand", "tasks", "task_ids"} & set(row)


def test_signal_receivers_record_ready_heartbeat_and_shutdown(db, monkeypatch):
    # close_old_connections() would close the test's transaction-wrapped connection
    monkeypatch.setattr(workers, "close_old_connections", lambda: None)

    class Timer:
        def __init__(self):
            self.calls = []

        def call_repeatedly(self, interval, fn):
            self.calls.append((interval, fn))

    consumer = SimpleNamespace(
        hostname="sig@host",
        timer=Timer(),
        pool=SimpleNamespace(info={"processes": []}, num_processes=3),
        task_consumer=SimpleNamespace(queues=[SimpleNamespace(name="default")]),
    )
    workers._on_worker_ready(sender=consumer)
    worker = Worker.objects.get(hostname="sig@host")
    assert worker.concurrency == 3 and worker.queues == ["default"] and worker.rss_mb > 0
    assert consumer.timer.calls and consumer.timer.calls[0][1] is workers.heartbeat_now
    workers._on_worker_shutting_down(sender="sig@host")
    workers.heartbeat_now()  # a timer tick during the warm shutdown
    worker.refresh_from_db()
    assert worker.stopped_at is not None
    workers._state.clear()
