"""The worker's RQ heartbeat (src/worker/process.py, `ASRWorker.heartbeat`): one round trip, and
none when the last one with RQ's default TTL is under a second old; a job's own TTL always goes,
and so does the next default one after it. Checked on the worker key in the tests' Redis.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from rq import Queue

from src.records import task_store
from src.records.task_store import TaskStatus
from src.worker import process
from src.worker.process import ASRWorker
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.worker_jobs import CountingEngine, queue_task, serve

DEFAULT_TTL = 420 + 60  # RQ's worker_ttl + 60 s


@pytest.fixture
def worker(conn: redis.Redis) -> ASRWorker:
    worker = ASRWorker([Queue("hb", connection=conn)], connection=conn, name="hb-worker")
    conn.hset(worker.key, "name", worker.name)  # as registered: the key outlives beat_sent's HDEL
    return worker


def beat_sent(conn: redis.Redis, worker: ASRWorker) -> bool:
    """Whether the last heartbeat call reached Redis; forgets it for the next check."""
    return bool(conn.hdel(worker.key, "last_heartbeat"))


def test_a_default_heartbeat_right_after_another_is_not_sent(
    conn: redis.Redis, worker: ASRWorker
) -> None:
    worker.heartbeat()
    assert beat_sent(conn, worker)
    assert DEFAULT_TTL - 5 < conn.ttl(worker.key) <= DEFAULT_TTL

    worker.heartbeat()
    worker.heartbeat()
    assert not beat_sent(conn, worker)

    with conn.pipeline() as pipe:  # RQ's is_suspended: a default one in its own pipeline
        worker.heartbeat(pipeline=pipe)
        pipe.execute()
    assert beat_sent(conn, worker)
    worker.heartbeat()
    assert not beat_sent(conn, worker)


def test_a_job_ttl_always_goes_and_the_default_one_after_it_too(
    conn: redis.Redis, worker: ASRWorker
) -> None:
    worker.heartbeat()
    worker.heartbeat(timeout=30)  # prepare_job_execution sets the job's own TTL
    assert beat_sent(conn, worker)
    assert conn.ttl(worker.key) <= 30

    worker.heartbeat()  # after the job: back to the default TTL, however soon
    assert beat_sent(conn, worker)
    assert conn.ttl(worker.key) > 30


def test_a_default_heartbeat_goes_again_once_the_interval_passed(
    conn: redis.Redis, worker: ASRWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(process, "HEARTBEAT_MIN_INTERVAL_S", 0.05)
    worker.heartbeat()
    assert beat_sent(conn, worker)
    time.sleep(0.1)
    worker.heartbeat()
    assert beat_sent(conn, worker)


def test_jobs_one_after_another_keep_the_worker_key_alive(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
) -> None:
    """RQ's own loop with the coalesced heartbeats: every job done, and the worker key, checked
    while the last job runs, carries a heartbeat and a TTL."""
    settings = make_settings(redis_server.port, storage, asr_batch_jobs=1)
    settings.recordings_dir.mkdir(parents=True)
    tasks = [queue_task(conn, settings, n, "ok") for n in (1, 2, 3)]
    seen: list[tuple[bytes | None, int]] = []

    class Watching(CountingEngine):
        def process(self, item):  # type: ignore[no-untyped-def]
            key = ASRWorker.redis_worker_namespace_prefix + "metrics-worker"
            seen.append((conn.hget(key, "last_heartbeat"), conn.ttl(key)))
            return super().process(item)

    serve(settings, Watching(max_batch=1))

    assert [task_store.load(conn, t).status for t in tasks] == [TaskStatus.DONE] * 3
    assert all(beat is not None and ttl > 0 for beat, ttl in seen), seen
