"""Locust users of the task API: create tasks, list them, poll the ones they created.

Driven by bench/loadtest/run.py, which passes LOADTEST_TOKEN (a JWT), LOADTEST_BRAND_ID and
LOADTEST_RESULT (where the status-code counts are written when the run stops).
"""

import json
import os
import random
from collections import Counter

from locust import HttpUser, between, events, task

TOKEN = os.environ.get("LOADTEST_TOKEN", "")
BRAND_ID = os.environ.get("LOADTEST_BRAND_ID", "")
RESULT = os.environ.get("LOADTEST_RESULT", "")

# (endpoint name, HTTP status) -> count; status 0 is a connection error or timeout.
status_counts: Counter = Counter()
created_ids: list[int] = []


@events.request.add_listener
def _count(request_type, name, response, exception, **kwargs):
    status = getattr(response, "status_code", 0) or 0
    status_counts[(f"{request_type} {name}", status)] += 1


@events.quitting.add_listener
def _write_result(environment, **kwargs):
    if RESULT:
        with open(RESULT, "w") as out:
            json.dump(
                {
                    "status_counts": [[n, s, c] for (n, s), c in sorted(status_counts.items())],
                    "created_ids": created_ids,
                },
                out,
            )


class TaskApiUser(HttpUser):
    wait_time = between(0.5, 2.0)

    def on_start(self):
        self.client.headers.update({"Authorization": f"Bearer {TOKEN}", "X-Brand-ID": BRAND_ID})
        self.mine: list[int] = []

    @task(2)
    def create(self):
        kind = random.random()
        if kind < 0.5:
            payload = {"task_type": "noop", "description": "load: noop"}
        else:
            payload = {
                "task_type": "seo_keyword_analysis",
                "description": "load: 20 keywords",
                "priority": random.choice(["low", "normal", "high"]),
                "context_data": {"keyword_ids": list(range(1, 21)), "delay_ms": 0},
            }
        with self.client.post("/tasks/", json=payload, name="/tasks/", catch_response=True) as r:
            if r.status_code == 201:
                self.mine.append(r.json()["id"])
                created_ids.append(self.mine[-1])
            else:
                r.failure(f"HTTP {r.status_code}")

    @task(3)
    def list_tasks(self):
        self.client.get("/tasks/?page_size=20", name="/tasks/")

    @task(5)
    def poll(self):
        if self.mine:
            pk = random.choice(self.mine[-10:])
            self.client.get(f"/tasks/{pk}/", name="/tasks/{id}/")
