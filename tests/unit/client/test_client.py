"""The typed client (src/client) against the real app and the tests' real Redis, through
FastAPI's TestClient (an httpx.Client): every call, and each error as the typed exception.
Push (WebSocket) and the long poll with a worker are in tests/system/test_client_service.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.client import ASRClient, ASRError, ServiceUnavailable, Task
from src.config import Settings
from src.records import task_store
from src.vocabulary import TaskStatus
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer

KEY = "client-key"


@pytest.fixture
def asr(redis_server: RedisServer, storage, conn: redis.Redis) -> Iterator[ASRClient]:
    settings = make_settings(redis_server.port, storage, api_key=KEY)
    with TestClient(create_app(settings)) as http, ASRClient(api_key=KEY, http=http) as client:
        yield client


def test_submit_result_history_retry_and_delete(asr: ASRClient, conn: redis.Redis):
    task = asr.submit(SPEECH_WAV, hotwords=["张三"], idempotency_key="tg-1")
    assert isinstance(task, Task)
    assert (task.status, task.position) == ("queued", 1) and task.estimated_wait
    assert task.result_url == f"/api/v1/asr/result/{task.task_id}"
    assert asr.submit(SPEECH_WAV, hotwords=["张三"], idempotency_key="tg-1").task_id == task.task_id
    again = asr.result(task.task_id)
    assert (again.task_id, again.status, again.position) == (task.task_id, "queued", 1)

    with pytest.raises(ASRError) as refused:
        asr.retry(task.task_id)  # only a failed task can be retried
    assert refused.value.status_code == 409 and refused.value.body["status"] == "queued"

    task_store.update(conn, task.task_id, status=TaskStatus.FAILED, error="boom")
    failed = asr.result(task.task_id, wait=5)  # settled: answered at once
    assert failed.settled and failed.error == "boom" and failed.retry_url
    assert asr.retry(task.task_id).status == "queued"

    task_store.update(conn, task.task_id, status=TaskStatus.DONE, text="好", progress=100)
    assert [(h.task_id, h.status) for h in asr.history()] == []  # the worker writes history
    assert asr.delete(task.task_id) is True
    with pytest.raises(ASRError) as gone:
        asr.result(task.task_id)
    assert (gone.value.status_code, gone.value.error) == (404, "Task not found")


def test_a_bad_request_is_a_typed_error_with_the_services_reason(asr: ASRClient):
    with pytest.raises(ASRError) as bad:
        asr.submit(b"not audio at all", filename="x.wav")
    assert bad.value.status_code == 400 and bad.value.error == "Invalid file format"
    with pytest.raises(ASRError) as lang:
        asr.submit(SPEECH_WAV, language="xx")
    assert lang.value.status_code == 422 and "supported_languages" in lang.value.body


def test_a_wrong_key_is_401(asr: ASRClient):
    asr._http.headers["X-API-Key"] = "wrong"
    with pytest.raises(ASRError) as denied:
        asr.history()
    assert denied.value.status_code == 401


def test_an_outage_is_service_unavailable(tmp_path, storage):
    server = RedisServer(tmp_path / "redis").start()
    settings: Settings = make_settings(server.port, storage)
    try:
        with TestClient(create_app(settings)) as http, ASRClient(http=http) as asr:
            server.stop()
            with pytest.raises(ServiceUnavailable) as down:
                asr.submit(SPEECH_WAV)
            assert down.value.status_code == 503 and "Redis" in down.value.error
    finally:
        server.stop()
