"""src/service/status.py: readiness, queue figures and history, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import redis
import redis.asyncio

from src.config import Settings
from src.queue import job_queue
from src.records import worker_start
from src.records.task_store import TaskRecord, utcnow
from src.records.worker_start import WorkerStart
from src.results import history
from src.service import status
from src.vocabulary import TaskStatus


def health(settings: Settings) -> status.Health:
    async def probe() -> status.Health:
        aconn = redis.asyncio.Redis.from_url(settings.redis_dsn)
        try:
            return await status.health(aconn, time.time() - 3700)
        finally:
            await aconn.aclose()

    return asyncio.run(probe())


def test_uptime_reads_like_the_design() -> None:
    assert status.uptime_text(59) == "0 minutes"
    assert status.uptime_text(3 * 86400 + 5 * 3600 + 7) == "3 days 5 hours"
    assert status.uptime_text(3600 + 60) == "1 hour 1 minute"


def test_no_worker_beacon_means_unavailable_with_the_reason(
    conn: redis.Redis, settings: Settings
) -> None:
    body = health(settings)
    assert body.status == "unavailable" and body.redis_connected
    assert body.error == status.NO_WORKER and body.workers == []
    assert body.uptime == "1 hour 1 minute"


def start(name: str, state: str = "failed", error: str | None = None) -> WorkerStart:
    return WorkerStart.model_validate(
        {"name": name, "state": state, "error": error, "since": utcnow(), "pid": 1, "hostname": "h"}
    )


def test_loading_is_said_only_while_a_worker_is_loading(
    conn: redis.Redis, settings: Settings
) -> None:
    worker_start.publish(conn, start("worker-1", "loading"), 15)
    body = health(settings)
    assert body.status == "unavailable" and body.error == "Models are still loading..."
    assert [(s.name, s.state) for s in body.workers_starting] == [("worker-1", "loading")]


def test_each_workers_start_error_is_the_reason_shared_reasons_once(
    conn: redis.Redis, settings: Settings
) -> None:
    missing = "ASR_MODEL iic/x not found in /hub: run `download_models.py`"
    worker_start.publish(conn, start("worker-1", error=missing), 15)
    worker_start.publish(conn, start("worker-2", error=missing), 15)
    worker_start.publish(conn, start("worker-3", "loading", error="CUDA out of memory"), 15)
    body = health(settings)
    assert body.status == "unavailable" and not body.model_loaded
    assert body.error == (
        f"worker-1, worker-2: {missing}; worker-3: trying again after: CUDA out of memory"
    )


def test_a_ready_worker_makes_it_ready_while_another_shows_why_it_is_not(
    conn: redis.Redis, settings: Settings
) -> None:
    job_queue.publish_readiness(conn, "worker-1", json.dumps({"name": "worker-1"}), 15)
    worker_start.publish(conn, start("worker-1", "loading"), 15)  # handing over: ready wins
    worker_start.publish(conn, start("worker-2", error="no GPU memory"), 15)
    body = health(settings)
    assert body.status == "ready" and body.error is None
    assert [s.name for s in body.workers_starting] == ["worker-2"]
    assert body.workers_starting[0].error == "no GPU memory"


def test_an_expired_start_state_is_gone(conn: redis.Redis, settings: Settings) -> None:
    worker_start.publish(conn, start("worker-1", error="x"), 1)
    conn.delete("asr:worker-start:worker-1")  # what its TTL does to a killed worker's state
    assert health(settings).error == status.NO_WORKER


def test_a_worker_beacon_makes_it_ready_and_shows_the_engine(
    conn: redis.Redis, settings: Settings
) -> None:
    beacon = {"name": "w1", "device": "cpu", "models": {"asr": "tiny"}, "pid": 1}
    job_queue.publish_readiness(conn, "w1", json.dumps(beacon), 15)
    body = health(settings)
    assert body.status == "ready" and body.model_loaded and body.workers_active == 1
    assert body.workers[0].name == "w1" and body.workers[0].models == {"asr": "tiny"}


def test_unreachable_redis_is_reported_not_raised(settings: Settings) -> None:
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    body = health(dead)
    assert body.status == "unavailable" and not body.redis_connected
    assert body.error == "Redis is unreachable"


def test_history_page_is_newest_first_with_the_list_length(
    conn: redis.Redis, settings: Settings
) -> None:
    for n in range(3):
        record = TaskRecord(
            task_id=f"t{n}",
            filename="a.wav",
            file=f"t{n}.wav",
            created_at=utcnow(),
            status=TaskStatus.DONE,
            text=f"text {n}",
        )
        history.record(conn, settings.history_file, record, keep=10)
    page = status.history_page(conn, 2)
    assert page.total == 3
    assert [e.task_id for e in page.entries] == ["t2", "t1"]
    assert page.entries[0].text == "text 2" and page.entries[0].status.value == "success"
