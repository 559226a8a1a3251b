"""Submit's Idempotency-Key through the ASGI app on a real Redis and RQ: a resend returns the task
of the key's first request and creates nothing; the same key with another request is a 409; and
concurrent requests with one key create one task."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.config import Settings
from src.queue.job_queue import get_queue
from src.records.redis_client import IDEMPOTENCY_PREFIX, task_key
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer, wait_for
from tests.support.worker_jobs import CountingEngine, serve

SUBMIT = "/api/v1/asr/submit"
CONFLICT = (
    "This Idempotency-Key was used for a different request (another file or other options); "
    "send a new key for a new request"
)


@pytest.fixture
def settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    return make_settings(redis_server.port, storage, asr_batch_jobs=1, callback_secret="s")


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def post(
    client: TestClient, key: str | None, path: Path = SPEECH_WAV, **form: str
) -> httpx.Response:
    headers = {"Idempotency-Key": key.encode()} if key is not None else {}
    with open(path, "rb") as fh:
        return client.post(SUBMIT, files={"audio": (path.name, fh)}, data=form, headers=headers)


def tasks_in(conn: redis.Redis) -> list[bytes]:
    return conn.keys(task_key("*"))


def recordings(settings: Settings) -> list[str]:
    return sorted(p.name for p in settings.recordings_dir.iterdir())


def test_a_resend_returns_the_first_task_and_creates_nothing(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    first = post(client, "tg-update-1", hotwords="天气")
    assert first.status_code == 200 and "Idempotent-Replayed" not in first.headers
    again = post(client, "tg-update-1", hotwords="天气")
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["task_id"] == first.json()["task_id"]
    assert again.json()["status"] == "queued" and again.json()["position"] == 1
    assert len(tasks_in(conn)) == 1
    assert get_queue(conn, settings).count == 1
    assert recordings(settings) == [f"{first.json()['task_id']}.wav"]  # no partial left behind
    assert client.get("/api/v1/stats").json()["submitted"] == 1

    serve(settings, CountingEngine(max_batch=1))
    done = post(client, "tg-update-1", hotwords="天气")  # after it finished: the same task
    assert done.json()["task_id"] == first.json()["task_id"]
    assert done.json()["status"] == "done" and done.json()["cached"] is False
    assert get_queue(conn, settings).count == 0 and len(tasks_in(conn)) == 1


@pytest.mark.parametrize(
    ("path", "form"),
    [
        (SPEECH_OGG, {"hotwords": "天气"}),
        (SPEECH_WAV, {"hotwords": "今天"}),
        (SPEECH_WAV, {"hotwords": "天气", "language": "en"}),
        (SPEECH_WAV, {"hotwords": "天气", "batch_size": "60"}),
        (SPEECH_WAV, {"hotwords": "天气", "callback_url": "http://127.0.0.1:9/hook"}),
    ],
    ids=["other-file", "other-hotwords", "other-language", "other-batch-size", "other-callback"],
)
def test_the_same_key_with_another_request_is_409(
    client: TestClient, settings: Settings, conn: redis.Redis, path: Path, form: dict[str, str]
):
    first = post(client, "key-1", hotwords="天气").json()
    resp = post(client, "key-1", path, **form)
    assert resp.status_code == 409
    assert resp.json() == {"error": CONFLICT, "task_id": first["task_id"]}
    assert len(tasks_in(conn)) == 1 and get_queue(conn, settings).count == 1
    assert recordings(settings) == [f"{first['task_id']}.wav"]


def test_other_keys_or_none_make_new_tasks(client: TestClient, conn: redis.Redis):
    ids = {post(client, key).json()["task_id"] for key in ("a", "b", None, None)}
    assert len(ids) == 4 and len(tasks_in(conn)) == 4


def test_concurrent_requests_with_one_key_create_one_task(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    n = 8
    barrier = threading.Barrier(n)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def send() -> None:
        barrier.wait()
        resp = post(client, "same-key")
        with lock:
            answers.append(resp)

    threads = [threading.Thread(target=send) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(answers) == n and all(a.status_code == 200 for a in answers), answers
    assert len({a.json()["task_id"] for a in answers}) == 1
    assert sum(a.headers.get("Idempotent-Replayed") == "true" for a in answers) == n - 1
    assert len(tasks_in(conn)) == 1 and get_queue(conn, settings).count == 1
    assert len(recordings(settings)) == 1


def test_a_key_whose_task_is_gone_or_expired_is_free_again(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
):
    settings = make_settings(redis_server.port, storage, idempotency_seconds=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = post(client, "k").json()["task_id"]
        assert client.delete(f"/api/v1/asr/task/{first}").status_code == 200
        second = post(client, "k", SPEECH_OGG)  # the deleted task's key: a new request
        assert second.status_code == 200 and "Idempotent-Replayed" not in second.headers
        assert second.json()["task_id"] != first
        wait_for(lambda: not conn.keys(f"{IDEMPOTENCY_PREFIX}*"), 5, 0.05, "the claim to expire")
        third = post(client, "k")  # the key's TTL ran out: another new task
        assert third.json()["task_id"] not in (first, second.json()["task_id"])


def test_keys_are_per_api_key(redis_server: RedisServer, storage: Path, conn: redis.Redis):
    answers: list[dict[str, Any]] = []
    for api_key in ("old-key", "new-key"):
        settings = make_settings(redis_server.port, storage, api_key=api_key)
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            client.headers["X-API-Key"] = api_key
            answers.append(post(client, "k", SPEECH_OGG).json())
            assert post(client, "k", SPEECH_OGG).json()["task_id"] == answers[-1]["task_id"]
    assert answers[0]["task_id"] != answers[1]["task_id"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ключ"], ids=repr)
def test_a_malformed_key_is_422(client: TestClient, conn: redis.Redis, key: str):
    resp = post(client, key)
    assert resp.status_code == 422
    assert resp.json()["details"][0]["field"] == "header.Idempotency-Key"
    assert tasks_in(conn) == []


def test_the_header_is_documented_on_submit(client: TestClient):
    submit = client.get("/openapi.json").json()["paths"][SUBMIT]["post"]
    header = next(p for p in submit["parameters"] if p["name"] == "Idempotency-Key")
    assert header["in"] == "header" and "409" in header["description"]
    assert "409" in submit["responses"]
    assert "Idempotent-Replayed" in submit["responses"]["200"]["headers"]
    schema = client.get("/openapi.json").json()["components"]["schemas"]["SubmitResponse"]
    assert "cached" in schema["properties"]
