"""Push instead of polling: `GET /result/{id}?wait=N` and the WebSocket `/asr/ws/{id}`.

The app runs with its lifespan (so its event hub subscribes to the tests' real Redis), and the
test plays the worker by writing the task's record through `task_store`, exactly as a worker
does: every change it makes must reach the waiting client through Redis pub/sub.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from starlette.websockets import WebSocketDisconnect

from src.api.main import create_app
from src.config import Settings
from src.queue.job_queue import get_queue
from src.records import task_store
from src.records.events import EVENTS_CHANNEL
from src.vocabulary import Stage, TaskStatus
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.records import DONE, new_task

KEY = "push-key"

# A change that never reaches the socket would block its read forever: fail instead.
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def queue(conn: redis.Redis, settings: Settings) -> Queue:
    return get_queue(conn, settings)


def subscribed(client: TestClient) -> None:
    """Wait until the app's hub listens: before that, a change could only be seen by a read."""
    deadline = time.monotonic() + 5
    conn = redis.Redis(port=client.app.state.settings.redis_port)  # type: ignore[attr-defined]
    while conn.pubsub_numsub(EVENTS_CHANNEL)[0][1] < 1:
        assert time.monotonic() < deadline, "the event hub never subscribed"
        time.sleep(0.02)


def later(delay_s: float, action: Callable[[], object]) -> threading.Thread:
    def run() -> None:
        time.sleep(delay_s)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def finish(conn: redis.Redis, task_id: str) -> None:
    task_store.update(conn, task_id, progress=100, stage=Stage.DONE, **DONE)


# --- long poll ------------------------------------------------------------------------------


def test_wait_answers_as_soon_as_the_task_is_done(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    later(0.5, lambda: finish(conn, task_id))
    started = time.monotonic()
    resp = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": 20})
    took = time.monotonic() - started
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "done" and body["text"] == DONE["text"]
    assert 0.4 < took < 10, took  # woken by the event, long before the 20 s


def test_wait_answers_a_failure_with_its_retry_url(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    later(0.3, lambda: task_store.update(conn, task_id, status=TaskStatus.FAILED, error="boom"))
    body = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": 20}).json()
    assert body["status"] == "failed" and body["error"] == "boom"
    assert body["retry_url"] == f"/api/v1/asr/retry/{task_id}"


def test_wait_runs_out_with_the_state_then(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    # Progress alone does not end a long poll: only done or failed do.
    later(0.2, lambda: task_store.update(conn, task_id, status=TaskStatus.PROCESSING, progress=40))
    started = time.monotonic()
    body = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": 1.0}).json()
    took = time.monotonic() - started
    assert 0.9 < took < 5, took
    assert body["status"] == "processing" and body["progress"] == 40


def test_wait_exports_the_transcript_once_done(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    later(0.3, lambda: finish(conn, task_id))
    resp = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": 20, "format": "txt"})
    assert resp.status_code == 200 and resp.text.strip() == DONE["text"]


def test_a_task_deleted_while_waited_on_is_404(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    later(0.3, lambda: client.delete(f"/api/v1/asr/task/{task_id}"))
    resp = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": 20})
    assert resp.status_code == 404 and resp.json()["error"] == "Task not found"


@pytest.mark.parametrize("wait", ["-1", "61", "soon"])
def test_a_wait_out_of_range_is_422(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue, wait: str
):
    task_id = new_task(conn, settings, queue)
    resp = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": wait})
    assert resp.status_code == 422 and resp.json()["error"] == "Invalid request"


def test_a_queued_task_shows_its_place_and_wait(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    first, second = new_task(conn, settings, queue, 1), new_task(conn, settings, queue, 2)
    body = client.get(f"/api/v1/asr/result/{second}").json()
    assert body["status"] == "queued" and body["position"] == 2
    assert body["estimated_wait"] > 0
    assert "retry_url" not in body and "error" not in body  # those are a failed task's
    assert client.get(f"/api/v1/asr/result/{first}").json()["position"] == 1


# --- WebSocket ------------------------------------------------------------------------------


def messages(ws: object, until: Callable[[dict], bool]) -> Iterator[dict]:
    while True:
        message = ws.receive_json()  # type: ignore[attr-defined]
        yield message
        if until(message):
            return


def test_the_socket_sends_each_change_then_closes_after_done(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    ahead = new_task(conn, settings, queue, 1)
    task_id = new_task(conn, settings, queue, 2)
    subscribed(client)
    with client.websocket_connect(f"/api/v1/asr/ws/{task_id}") as ws:
        first = ws.receive_json()
        assert first["status"] == "queued" and first["position"] == 2
        assert first["estimated_wait"] > 0
        # The task ahead is taken off the queue: this one moves up without changing itself.
        queue.remove(ahead)
        task_store.update(conn, ahead, status=TaskStatus.PROCESSING)
        assert ws.receive_json()["position"] == 1
        queue.remove(task_id)
        task_store.update(conn, task_id, status=TaskStatus.PROCESSING, stage=Stage.DECODE)
        seen = ws.receive_json()
        assert (seen["status"], seen["position"], seen["stage"]) == ("processing", 0, "decode")
        task_store.update(conn, task_id, progress=60, stage=Stage.RECOGNITION)
        seen = ws.receive_json()
        assert (seen["progress"], seen["stage"]) == (60, "recognition")
        finish(conn, task_id)
        last = ws.receive_json()
        assert last["status"] == "done" and last["text"] == DONE["text"]
        assert last["sentences"][0]["text"] == "今天天气很好。"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000


def test_a_failure_is_sent_with_the_retry_url(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    with client.websocket_connect(f"/api/v1/asr/ws/{task_id}") as ws:
        assert ws.receive_json()["status"] == "queued"
        task_store.update(conn, task_id, status=TaskStatus.FAILED, error="no speech")
        last = ws.receive_json()
        assert last["error"] == "no speech"
        assert last["retry_url"] == f"/api/v1/asr/retry/{task_id}"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000


def test_a_client_that_connects_after_the_end_gets_the_final_state(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    finish(conn, task_id)
    with client.websocket_connect(f"/api/v1/asr/ws/{task_id}") as ws:
        assert ws.receive_json()["text"] == DONE["text"]
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 1000


@pytest.mark.parametrize(
    ("task_id", "code", "reason"),
    [
        ("2025-12-01_001_0a1b2c3d4e5f60718293a4b5", 4404, "Task not found"),
        ("asr:task:*", 4422, "Invalid task id"),
    ],
)
def test_an_unknown_or_malformed_task_gets_a_close_code_and_reason(
    client: TestClient, task_id: str, code: int, reason: str
):
    with (
        client.websocket_connect(f"/api/v1/asr/ws/{task_id}") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_json()
    assert (closed.value.code, closed.value.reason) == (code, reason)


def test_a_task_deleted_while_followed_closes_with_4404(
    client: TestClient, conn: redis.Redis, settings: Settings, queue: Queue
):
    task_id = new_task(conn, settings, queue)
    subscribed(client)
    with client.websocket_connect(f"/api/v1/asr/ws/{task_id}") as ws:
        assert ws.receive_json()["status"] == "queued"
        assert client.delete(f"/api/v1/asr/task/{task_id}").status_code == 200
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert closed.value.code == 4404


@pytest.fixture
def secured(redis_server: RedisServer, storage, conn: redis.Redis) -> Iterator[TestClient]:
    settings = make_settings(redis_server.port, storage, api_key=KEY)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("headers", "query", "accepted"),
    [
        ({}, "", False),
        ({"X-API-Key": "wrong"}, "", False),
        ({}, "?api_key=wrong", False),
        ({"X-API-Key": KEY}, "", True),
        ({"Authorization": f"Bearer {KEY}"}, "", True),
        ({}, f"?api_key={KEY}", True),  # browsers cannot set a WebSocket's headers
    ],
)
def test_the_socket_needs_the_key_where_one_is_set(
    secured: TestClient,
    conn: redis.Redis,
    headers: dict[str, str],
    query: str,
    accepted: bool,
):
    settings = secured.app.state.settings  # type: ignore[attr-defined]
    task_id = new_task(conn, settings, get_queue(conn, settings))
    finish(conn, task_id)
    with secured.websocket_connect(f"/api/v1/asr/ws/{task_id}{query}", headers=headers) as ws:
        if accepted:
            assert ws.receive_json()["status"] == "done"
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    expected = (1000, "settled") if accepted else (4401, "Missing or invalid API key")
    assert (closed.value.code, closed.value.reason) == expected


def test_the_socket_closes_with_1013_while_redis_is_down(tmp_path, storage):
    server = RedisServer(tmp_path / "redis").start()
    conn = server.client()
    settings = make_settings(server.port, storage)
    task_id = new_task(conn, settings, get_queue(conn, settings))
    try:
        with TestClient(create_app(settings)) as client:
            server.stop()
            with (
                client.websocket_connect(f"/api/v1/asr/ws/{task_id}") as ws,
                pytest.raises(WebSocketDisconnect) as closed,
            ):
                ws.receive_json()
            assert closed.value.code == 1013
            assert "Redis" in closed.value.reason
            resp = client.get(f"/api/v1/asr/result/{task_id}", params={"wait": 5})
            assert resp.status_code == 503  # the long poll too: at once, not after the wait
    finally:
        server.stop()
