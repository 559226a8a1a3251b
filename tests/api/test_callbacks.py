"""The completion webhook through the ASGI app, a real Redis, a real ASRWorker serving the real
jobs of both queues (a stand-in engine), and a real HTTP receiver on a loopback port."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq.registry import ScheduledJobRegistry

from src.api.main import create_app
from src.config import Settings
from src.engine.interface import EngineError, EngineInput, EngineOutput
from src.queue import job_queue
from src.queue.job_queue import callback_queue, worker_queues
from src.records import task_store
from src.worker.context import WorkerContext
from src.worker.process import ASRWorker, worker_connection
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.receiver import Receiver, closed_port
from tests.support.worker_jobs import CountingEngine

SUBMIT = "/api/v1/asr/submit"
SECRET = "webhook-secret"


def hook_settings(port: int, storage: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "callback_secret": SECRET,
        "callback_retry_intervals": [1],
        "callback_timeout_seconds": 5,
        "asr_batch_jobs": 1,
    }
    values.update(overrides)
    settings = make_settings(port, storage, **values)
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture
def settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    return hook_settings(redis_server.port, storage)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


class FailingEngine(CountingEngine):
    def process(self, item: EngineInput) -> EngineOutput:
        raise EngineError("no signal")


def serve(settings: Settings, engine: CountingEngine | None = None) -> None:
    """A worker as src/worker/process.py builds it: transcriptions first, then deliveries."""
    conn = worker_connection(settings)
    engine = engine or CountingEngine(max_batch=1)
    ctx = WorkerContext(settings=settings, engine=engine, name="hook-worker")
    queues = worker_queues(conn, settings)
    ASRWorker(queues, connection=conn, context=ctx).work(burst=True, with_scheduler=False)


def post(client: TestClient, path: Path = SPEECH_WAV, **form: str) -> Any:
    with open(path, "rb") as fh:
        return client.post(SUBMIT, files={"audio": (path.name, fh)}, data=form)


def verify(headers: dict[str, str], body: bytes, secret: str = SECRET) -> None:
    """What a receiver does (README "Completion webhook"), written here independently."""
    timestamp = headers["x-asr-timestamp"]
    assert abs(time.time() - int(timestamp)) < 300
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    assert hmac.compare_digest(headers["x-asr-signature"], "sha256=" + mac.hexdigest())


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/done", "http and https"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://[fe80::1]:8080/x", "link-local"),
        ("http://10.0.0.5/hook", "private"),
        ("http://192.168.1.20:8081/hook", "private"),
        ("http://0.0.0.0:8081/hook", "unspecified"),
    ],
)
def test_a_refused_callback_url_is_a_422_and_stores_nothing(
    client: TestClient, settings: Settings, url: str, reason: str
):
    resp = post(client, callback_url=url)
    assert resp.status_code == 422, resp.text
    body = resp.json()
    assert body["error"] == "callback_url refused" and reason in body["reason"]
    assert list(settings.recordings_dir.iterdir()) == []


def test_private_addresses_pass_when_allowed(redis_server: RedisServer, storage: Path):
    settings = hook_settings(redis_server.port, storage, callback_allow_private=True)
    with TestClient(create_app(settings)) as client:
        assert post(client, callback_url="http://192.168.1.20:8081/hook").status_code == 200


def test_without_a_secret_callbacks_are_not_configured(redis_server: RedisServer, storage: Path):
    settings = hook_settings(redis_server.port, storage, callback_secret=None)
    with TestClient(create_app(settings)) as client:
        resp = post(client, callback_url="http://127.0.0.1:8081/hook")
        assert resp.status_code == 422
        assert "not configured" in resp.json()["error"]
        assert post(client).status_code == 200  # without a callback_url nothing changes


def test_a_done_task_is_posted_once_signed_with_its_result(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    with Receiver() as receiver:
        submitted = post(client, callback_url=receiver.url).json()
        serve(settings)
        [got] = receiver.wait(1, 10)
    assert got.path == "/asr-done"
    verify(got.headers, got.body)
    assert got.headers["x-asr-task-id"] == submitted["task_id"]
    sent = json.loads(got.body)
    result = client.get(submitted["result_url"]).json()
    assert sent["status"] == "done" and sent["text"] == "ok"
    for key in ("task_id", "status", "text", "duration", "cached"):
        assert sent[key] == result[key], key
    [attempt] = result["callback_attempts"]
    assert attempt["delivered"] is True and attempt["status_code"] == 200
    assert len(receiver.requests) == 1
    assert "callback_attempts" not in client.get(post(client).json()["result_url"]).json()


def test_a_failed_task_is_posted_with_its_error(client: TestClient, settings: Settings):
    with Receiver() as receiver:
        submitted = post(client, callback_url=receiver.url).json()
        serve(settings, FailingEngine(max_batch=1))
        [got] = receiver.wait(1, 10)
    verify(got.headers, got.body)
    sent = json.loads(got.body)
    assert sent["task_id"] == submitted["task_id"]
    assert sent["status"] == "failed" and "no signal" in sent["error"] and sent["text"] is None


def test_a_receiver_that_is_down_leaves_the_task_done_and_the_retry_delivers(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    with Receiver() as receiver:
        submitted = post(client, callback_url=f"http://127.0.0.1:{closed_port()}/x").json()
        task_id = submitted["task_id"]
        serve(settings)  # transcribes, then the delivery is refused by the closed port
        result = client.get(submitted["result_url"]).json()
        assert result["status"] == "done"
        [refused] = result["callback_attempts"]
        assert refused["delivered"] is False and "ConnectError" in refused["error"]
        registry = ScheduledJobRegistry(queue=callback_queue(conn, settings))
        assert registry.count == 1  # waiting out its 1 s back-off, not on the queue

        # the receiver is up again (a listening port of its own): the retry, once due, delivers
        task_store.update(conn, task_id, callback_url=receiver.url)
        time.sleep(1.1)
        assert len(job_queue.release_due_callbacks(conn, settings)) == 1
        serve(settings)
        receiver.wait(1, 10)
        attempts = client.get(submitted["result_url"]).json()["callback_attempts"]
    assert [a.get("status_code") for a in attempts] == [None, 200]
    assert [a["delivered"] for a in attempts] == [False, True]
    assert registry.count == 0 and callback_queue(conn, settings).count == 0


def test_a_cache_hit_gets_its_callback_from_submit(redis_server: RedisServer, storage: Path):
    settings = hook_settings(redis_server.port, storage, result_cache_seconds=3600)
    with TestClient(create_app(settings)) as client, Receiver() as receiver:
        first = post(client).json()
        serve(settings)
        assert client.get(first["result_url"]).json()["status"] == "done"
        hit = post(client, callback_url=receiver.url).json()
        assert hit["cached"] is True and hit["status"] == "done"
        serve(settings)
        [got] = receiver.wait(1, 10)
    verify(got.headers, got.body)
    sent = json.loads(got.body)
    assert sent["task_id"] == hit["task_id"] and sent["cached"] is True and sent["text"] == "ok"
