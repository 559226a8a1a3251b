"""What a job writes to the worker's log about its result: one DEBUG line with every segment's
span and text length (src/worker/jobs.py), not a line per segment, which cost a worker 1 ms a job
on short clips. A real ASRWorker serves the real `process_task` job; the engine is a stand-in."""

from __future__ import annotations

from pathlib import Path

import redis

from src.engine.interface import EngineInput, EngineOutput
from src.records import task_store
from src.records.task_store import TaskStatus
from src.vocabulary import Sentence
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer
from tests.support.worker_jobs import CountingEngine, queue_task, serve

SENTENCES = [
    Sentence(text="你好", start=0, end=1000),
    Sentence(text="今天天气", start=1000, end=2500),
    Sentence(text="好", start=2600, end=4000),
]


class Sentences(CountingEngine):
    def process(self, item: EngineInput) -> EngineOutput:
        out = super().process(item)
        return EngineOutput(
            text="".join(s.text for s in SENTENCES),
            duration=out.duration,
            processing_time=out.processing_time,
            sentences=SENTENCES,
        )


def test_one_debug_line_lists_the_segments(
    redis_server: RedisServer, storage: Path, conn: redis.Redis, log_lines: list[str]
) -> None:
    settings = make_settings(redis_server.port, storage, asr_batch_jobs=1)
    settings.recordings_dir.mkdir(parents=True)
    task_id = queue_task(conn, settings, 1, "ok")

    serve(settings, Sentences(max_batch=1))

    record = task_store.load(conn, task_id)
    assert record is not None and record.status == TaskStatus.DONE
    about = [line for line in log_lines if f"task={task_id}" in line and "segment" in line]
    assert about == [
        f"DEBUG metrics-worker task={task_id} segments (start-end/text_length): "
        "0-1000ms/2 1000-2500ms/4 2600-4000ms/1"
    ]
