"""src/service/status.py: readiness, queue figures and history, on a real Redis."""

from __future__ import annotations

import asyncio
import json
import time

import redis
import redis.asyncio

from src.config import Settings
from src.queue import job_queue
from src.records.task_store import TaskRecord, utcnow
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
    assert body.error == "Models are still loading..." and body.workers == []
    assert body.uptime == "1 hour 1 minute"


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
