"""README: "A lone voice note is never held back to wait for others". With batching on, a
worker that finds one short clip queued runs it at once, alone, instead of waiting for a batch
to fill. A real ASRWorker serves the real `process_task` job; the engine is a stand-in that
takes ENGINE_S per clip, so the job's own time shows any wait added around it."""

from __future__ import annotations

from pathlib import Path

import redis

from src.records import task_store
from src.records.task_store import TaskStatus
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.worker_jobs import ENGINE_S, CountingEngine, queue_task, serve

# Bookkeeping around the engine's pass (a few Redis round trips), with room for a loaded box;
# far below any wait "for others" worth having.
OVERHEAD_S = 0.5


def test_a_lone_voice_note_runs_at_once_alone(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
) -> None:
    settings = make_settings(redis_server.port, storage, asr_batch_jobs=4)
    settings.recordings_dir.mkdir(parents=True)
    task_id = queue_task(conn, settings, 1, "note")
    engine = CountingEngine(max_batch=4)

    serve(settings, engine)

    record = task_store.load(conn, task_id)
    assert record is not None and record.status == TaskStatus.DONE
    assert engine.passes == [1]  # a pass of its own, not a batch
    assert record.started_at is not None and record.finished_at is not None
    took = (record.finished_at - record.started_at).total_seconds()
    assert ENGINE_S <= took < ENGINE_S + OVERHEAD_S, took
