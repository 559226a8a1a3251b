"""A worker that serves real `process_task` jobs from the tests' Redis with a stand-in engine.

The unit tests of what a job does (metrics, record expiry, lone jobs) share it: a real ASRWorker,
RQ and Redis, and an engine that sleeps instead of loading a model, so the figures can be checked
against the task records and RQ's own job hashes exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import redis

from src.config import Settings
from src.engine.interface import EngineError, EngineInfo, EngineInput, EngineOutput
from src.queue import job_queue
from src.queue.job_queue import get_lanes
from src.records import task_store
from src.records.redis_client import worker_connection
from src.records.task_store import TaskRecord
from src.vocabulary import Priority
from src.worker.context import WorkerContext
from src.worker.process import ASRWorker

AUDIO_S = 4.0
ENGINE_S = 0.1  # slept for real, so a batch's members start well before their own RQ turn


class CountingEngine:
    """Returns a fixed transcript, fails on a recording named *fail*, pools up to max_batch."""

    info = EngineInfo(device="cpu", models={}, load_time=0.0)

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.passes: list[int] = []

    def _one(self, item: EngineInput) -> EngineOutput | EngineError:
        if "fail" in item.path.name:
            return EngineError("no signal")
        time.sleep(ENGINE_S)
        return EngineOutput(text="ok", duration=AUDIO_S, processing_time=ENGINE_S)

    def process(self, item: EngineInput) -> EngineOutput:
        self.passes.append(1)
        result = self._one(item)
        if isinstance(result, EngineError):
            raise result
        return result

    def process_batch(self, items: Sequence[EngineInput]) -> list[EngineOutput | Exception]:
        self.passes.append(len(items))
        return [self._one(item) for item in items]


def queue_task(
    conn: redis.Redis, settings: Settings, n: int, name: str, stored: bool = True
) -> str:
    """Save a task record and enqueue its job, as a retry of a task submitted an hour ago."""
    task_id = f"2026-11-29_{n:03d}_{n:024x}"
    file = f"{task_id}-{name}.wav"
    if stored:
        (settings.recordings_dir / file).write_bytes(b"RIFF")
    record = TaskRecord(
        task_id=task_id,
        filename=f"{name}.wav",
        file=file,
        audio_duration=AUDIO_S,
        created_at=datetime.now(UTC) - timedelta(hours=1),  # submitted long ago: a retry
    )
    task_store.save(conn, record)
    job_queue.enqueue_task(get_lanes(conn, settings)[Priority.NORMAL], task_id, settings)
    return task_id


def serve(settings: Settings, engine: CountingEngine) -> None:
    conn = worker_connection(settings)
    ctx = WorkerContext(settings=settings, engine=engine, name="metrics-worker")
    worker = ASRWorker(get_lanes(conn, settings).ordered(), connection=conn, context=ctx)
    worker.work(burst=True, with_scheduler=False)
