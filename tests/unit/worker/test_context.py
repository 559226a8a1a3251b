"""The worker hands its context to the job code: settings given to the worker, not the
environment's, are what a job runs with (architecture issue, item 5).

A real ASRWorker serves a real `process_task` job from the tests' Redis in burst mode; only the
engine is a stand-in, so no model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from src.config import Settings, get_settings
from src.engine.interface import EngineInfo, EngineInput, EngineOutput
from src.queue import job_queue
from src.queue.job_queue import get_queue
from src.records import task_store
from src.records.redis_client import task_key, worker_connection
from src.records.task_store import TaskRecord, TaskStatus
from src.worker.context import NoWorkerContextError, WorkerContext, bound, current
from src.worker.process import ASRWorker
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer

INJECTED_TTL = 4321


class FakeEngine:
    """Stands in for the ASR engine: records what it was asked, returns a fixed result."""

    info = EngineInfo(device="cpu", models={}, load_time=0.0)
    max_batch = 1

    def __init__(self) -> None:
        self.calls: list[Path] = []

    def process(self, item: EngineInput) -> EngineOutput:
        self.calls.append(item.path)
        return EngineOutput(text="context ok", duration=1.0, processing_time=0.1)

    def process_batch(self, items: Sequence[EngineInput]) -> list[EngineOutput | Exception]:
        return [self.process(item) for item in items]


def test_jobs_outside_a_worker_get_a_clear_error() -> None:
    with pytest.raises(NoWorkerContextError, match="plain `rq worker`"):
        current()


def test_a_bound_context_is_reset_afterwards(settings: Settings) -> None:
    ctx = WorkerContext(settings=settings, engine=FakeEngine(), name="w")
    with bound(ctx):
        assert current() is ctx
    with pytest.raises(NoWorkerContextError):
        current()


def test_a_worker_without_context_refuses_to_serve(settings: Settings, conn: redis.Redis) -> None:
    worker = ASRWorker([get_queue(conn, settings)], connection=conn, name="bare")
    with pytest.raises(RuntimeError, match="WorkerContext"):
        worker.work(burst=True, with_scheduler=False)


def test_settings_given_to_the_worker_reach_the_job(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
) -> None:
    settings = make_settings(
        redis_server.port, storage, task_ttl_seconds=INJECTED_TTL, asr_batch_jobs=1
    )
    assert get_settings().task_ttl_seconds != INJECTED_TTL  # the environment says otherwise
    task_id = "2026-11-29_001_" + "ab" * 12
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    (settings.recordings_dir / f"{task_id}.wav").write_bytes(b"RIFF")
    task_store.save(
        conn,
        TaskRecord(
            task_id=task_id, filename="a.wav", file=f"{task_id}.wav", created_at=datetime.now(UTC)
        ),
    )
    worker_conn = worker_connection(settings)
    queue = get_queue(worker_conn, settings)
    job_queue.enqueue_task(queue, task_id, settings)
    fake = FakeEngine()
    ctx = WorkerContext(settings=settings, engine=fake, name="ctx-worker-1")

    ASRWorker([queue], connection=worker_conn, context=ctx).work(burst=True, with_scheduler=False)

    done = task_store.load(conn, task_id)
    assert done is not None and done.status == TaskStatus.DONE, done
    assert done.text == "context ok" and done.worker_id == "ctx-worker-1"
    assert fake.calls == [settings.recordings_dir / f"{task_id}.wav"]
    assert INJECTED_TTL - 60 < conn.ttl(task_key(task_id)) <= INJECTED_TTL
    lines = [json.loads(line) for line in settings.history_file.read_text().splitlines()]
    assert [line["task_id"] for line in lines] == [task_id]
    with pytest.raises(NoWorkerContextError):  # unbound again once the worker stopped
        current()
