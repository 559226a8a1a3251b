"""What a worker counts for Prometheus as it serves jobs (src/worker/jobs.py,
src/results/metrics.py).

A real ASRWorker serves real `process_task` jobs from the tests' Redis in burst mode, with RQ's
failure callback; only the engine is a stand-in (no model), so the figures can be checked
against the task records and RQ's own job hashes exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq.job import Job

from src.config import Settings
from src.records import task_store
from src.records.redis_client import FAILURES_KEY
from src.records.task_store import TaskStatus
from src.results import metrics
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.worker_jobs import AUDIO_S, ENGINE_S, CountingEngine, queue_task, serve


def histogram(conn: redis.Redis, spec: metrics.HistogramSpec) -> metrics.HistogramValues:
    return metrics.histogram(spec, conn.hgetall(spec.key))


def waits(conn: redis.Redis, task_ids: list[str]) -> float:
    """What the wait histogram should hold: each job's start less its enqueue, from the task
    record and RQ's job hash."""
    total = 0.0
    for task_id in task_ids:
        record = task_store.load(conn, task_id)
        enqueued = Job.fetch(task_id, connection=conn).enqueued_at
        assert record is not None and record.started_at is not None and enqueued is not None
        total += (record.started_at - enqueued).total_seconds()
    return total


@pytest.fixture
def worker_settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    settings = make_settings(redis_server.port, storage, asr_batch_jobs=1)
    settings.recordings_dir.mkdir(parents=True)
    return settings


def test_done_and_failed_jobs_are_counted_one_by_one(
    worker_settings: Settings, conn: redis.Redis
) -> None:
    ok = [queue_task(conn, worker_settings, n, "ok") for n in (1, 2)]
    failing = queue_task(conn, worker_settings, 3, "fail")
    missing = queue_task(conn, worker_settings, 4, "gone", stored=False)

    serve(worker_settings, CountingEngine(max_batch=1))

    statuses = [task_store.load(conn, t).status for t in [*ok, failing, missing]]
    assert statuses == [TaskStatus.DONE, TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.FAILED]
    failures = metrics.failures(conn.hgetall(FAILURES_KEY))
    assert failures["engine_error"] == 1 and failures["recording_missing"] == 1
    assert sum(failures.values()) == 2
    wait = histogram(conn, metrics.WAIT)  # every job started, the failed ones too
    assert wait.count == 4
    assert wait.sum == pytest.approx(waits(conn, [*ok, failing, missing]), abs=1e-3)
    processing = histogram(conn, metrics.PROCESSING)  # jobs that finished done
    assert processing.count == 2
    records = [task_store.load(conn, t) for t in ok]
    took = sum((r.finished_at - r.started_at).total_seconds() for r in records)
    assert processing.sum == pytest.approx(took, abs=1e-3)
    rtf = histogram(conn, metrics.RTF)
    assert (rtf.count, rtf.sum) == (2, pytest.approx(2 * ENGINE_S / AUDIO_S))
    batch = histogram(conn, metrics.BATCH)  # two passes that returned, one job each
    assert (batch.count, batch.sum) == (2, 2.0)


def test_a_pooled_pass_is_counted_once_with_its_size(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
) -> None:
    settings = make_settings(redis_server.port, storage, asr_batch_jobs=4)
    settings.recordings_dir.mkdir(parents=True)
    ids = [queue_task(conn, settings, n, "ok") for n in range(1, 5)]
    engine = CountingEngine(max_batch=4)

    serve(settings, engine)

    assert engine.passes == [4]  # the first job claimed the other three
    assert all(task_store.load(conn, t).status == TaskStatus.DONE for t in ids)
    batch = histogram(conn, metrics.BATCH)
    assert (batch.count, batch.sum) == (1, 4.0)
    assert dict(batch.buckets)[2.0] == 0 and dict(batch.buckets)[4.0] == 1
    assert histogram(conn, metrics.RTF).count == 4
    wait = histogram(conn, metrics.WAIT)  # members waited until the pass began, not their turn
    assert wait.count == 4 and wait.sum == pytest.approx(waits(conn, ids), abs=1e-3)
