"""`position` is always an integer: n >= 1 while a task is `queued` (1 = next), 0 once a worker
has it (`processing`), absent once it is done or failed. The jobs are taken off the queue with
RQ's own dequeue and the service's batch claim, as a worker would (tests/system/test_positions.py
does it with real worker processes)."""

from __future__ import annotations

import redis
from fastapi.testclient import TestClient
from rq import Queue

from src.config import Settings
from src.queue import job_queue
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import result, submit


def test_queued_tasks_have_their_place_in_line(client: TestClient):
    answers = []
    for _ in range(3):
        with open(SPEECH_WAV, "rb") as fh:
            answers.append(client.post("/api/v1/asr/submit", files={"audio": fh}).json())
    assert [(a["status"], a["position"]) for a in answers] == [
        ("queued", 1),
        ("queued", 2),
        ("queued", 3),
    ]
    assert [result(client, a["task_id"])["position"] for a in answers] == [1, 2, 3]


def test_a_job_rq_handed_to_a_worker_is_processing_at_position_0(
    client: TestClient, conn: redis.Redis, settings: Settings
):
    first, second = submit(client, SPEECH_WAV), submit(client, SPEECH_WAV)
    queue = Queue(settings.rq_queue_name, connection=conn)
    taken = Queue.dequeue_any([queue], None, connection=conn)  # what a worker's dequeue does
    assert taken is not None and taken[0].id == first

    body = result(client, first)  # the worker has not marked the record yet
    assert (body["status"], body["position"]) == ("processing", 0)
    assert (result(client, second)["status"], result(client, second)["position"]) == ("queued", 1)


def test_a_job_claimed_for_a_batch_is_processing_at_position_0(
    client: TestClient, conn: redis.Redis, settings: Settings
):
    first, second = submit(client, SPEECH_WAV), submit(client, SPEECH_WAV)
    queue = Queue(settings.rq_queue_name, connection=conn)
    assert job_queue.claim(conn, queue, "worker-1", [second]) == [second]

    assert (result(client, second)["status"], result(client, second)["position"]) == (
        "processing",
        0,
    )
    assert (result(client, first)["status"], result(client, first)["position"]) == ("queued", 1)


def test_the_schema_says_position_is_a_required_integer(client: TestClient):
    schema = client.get("/openapi.json").json()["components"]["schemas"]
    submitted = schema["SubmitResponse"]
    assert "position" in submitted["required"]
    assert submitted["properties"]["position"]["type"] == "integer"
    assert submitted["properties"]["position"]["minimum"] == 0
    assert "0 once a worker has the job" in submitted["properties"]["position"]["description"]
