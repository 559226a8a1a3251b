"""How long a task record lives (design: `asr:task:{id}` expires TASK_TTL_SECONDS after the task
ends, and never while it waits or runs): a record that never expired would fill a `noeviction`
Redis; one that expired while queued would lose an accepted job.

A real ASRWorker serves real `process_task` jobs in burst mode; only the engine is a stand-in.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from src.config import Settings
from src.queue.job_queue import get_lanes
from src.records import task_store
from src.records.redis_client import task_key
from src.records.task_store import TaskStatus
from src.service import tasks
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.worker_jobs import CountingEngine, queue_task, serve


@pytest.fixture
def settings_ttl(redis_server: RedisServer, storage: Path) -> Settings:
    settings = make_settings(redis_server.port, storage, asr_batch_jobs=1, task_ttl_seconds=900)
    settings.recordings_dir.mkdir(parents=True)
    return settings


def assert_expires_after_the_task(conn: redis.Redis, settings: Settings, task_id: str) -> None:
    ttl = conn.ttl(task_key(task_id))
    assert settings.task_ttl_seconds - 10 < ttl <= settings.task_ttl_seconds, ttl


def test_a_finished_record_expires_and_a_retried_one_does_not_while_it_waits(
    settings_ttl: Settings, conn: redis.Redis
) -> None:
    done = queue_task(conn, settings_ttl, 1, "ok")
    failed = queue_task(conn, settings_ttl, 2, "fail")
    assert conn.ttl(task_key(done)) == -1 and conn.ttl(task_key(failed)) == -1  # queued
    serve(settings_ttl, CountingEngine(max_batch=1))
    for task_id, status in ((done, TaskStatus.DONE), (failed, TaskStatus.FAILED)):
        record = task_store.load(conn, task_id)
        assert record is not None and record.status == status
        assert_expires_after_the_task(conn, settings_ttl, task_id)

    tasks.retry(conn, get_lanes(conn, settings_ttl), settings_ttl, failed)
    assert conn.ttl(task_key(failed)) == -1  # queued again: it must outlive any wait
