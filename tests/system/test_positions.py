"""`position` with real worker processes: a job an idle worker takes at once is answered
`processing` at position 0; one behind busy workers is `queued` with its place in line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rq import Queue, Worker

from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Service, result, wait_status
from tests.support.processes import wait_for

pytestmark = pytest.mark.slow


def post(client: TestClient, path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        resp = client.post("/api/v1/asr/submit", files={"audio": (path.name, fh)})
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_idle(service: Service) -> None:
    """Both workers idle with nothing queued: each is blocked in RQ's BLMOVE on the queue."""
    queue = Queue(service.settings.rq_queue_name, connection=service.redis_server.client())

    def idle() -> bool:
        workers = Worker.all(queue=queue)
        return queue.count == 0 and len(workers) == 2 and all(w.state == "idle" for w in workers)

    wait_for(idle, 180, 0.2, "both workers idle")
    time.sleep(0.5)  # from idle to blocked in BLMOVE


def test_a_job_an_idle_worker_takes_at_once_is_processing_at_position_0(service: Service):
    wait_idle(service)
    with service.app_client() as client:
        answer = post(client, SPEECH_WAV)
        # Taken within milliseconds: the submit's answer, or the first poll after it, says so.
        assert (answer["status"], answer["position"]) in (("processing", 0), ("queued", 1))

        def taken() -> bool:
            body = result(client, answer["task_id"])
            return body["status"] != "queued" and body.get("position") in (0, None)

        wait_for(taken, 5, 0.01, "taken by the idle worker")
        done = wait_status(client, answer["task_id"], {"done", "failed"}, 120)
    assert done["status"] == "done" and "position" not in done


def test_behind_busy_workers_a_job_is_queued_with_its_place(service: Service, long_clip: Path):
    wait_idle(service)
    with service.app_client() as client:
        busy = [post(client, long_clip) for _ in range(2)]  # one per worker, seconds each
        for b in busy:
            wait_status(client, b["task_id"], {"processing"}, 10)
            assert result(client, b["task_id"])["position"] == 0
        waiting = [post(client, SPEECH_WAV) for _ in range(2)]
        assert [(w["status"], w["position"]) for w in waiting] == [("queued", 1), ("queued", 2)]
        polled = result(client, waiting[1]["task_id"])
        assert polled["status"] == "queued" and polled["position"] in (1, 2)
        for task in busy + waiting:
            wait_status(client, task["task_id"], {"done", "failed"}, 180)
