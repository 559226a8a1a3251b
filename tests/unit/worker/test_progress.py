"""How often a running job writes its progress: each write is a Redis transaction and an event,
and on short clips they cost the worker measurable throughput (report/PERFORMANCE.md, 2b)."""

from __future__ import annotations

import time

import redis

from src.records import task_store
from src.vocabulary import Stage, TaskStatus
from src.worker import jobs
from src.worker.jobs import PROGRESS_MIN_INTERVAL_S
from tests.support.records import finished


def test_a_job_writes_progress_at_most_every_interval(conn: redis.Redis):
    record = finished(1, TaskStatus.PROCESSING, progress=0, stage=None)
    task_store.save(conn, record)
    report = jobs._progress_writer(conn, record.task_id, "worker-1")
    for stage, fraction in ((Stage.DECODE, 0.0), (Stage.VAD, 0.1), (Stage.RECOGNITION, 0.3)):
        report(stage, fraction)  # a short clip: all within the first interval
    stored = task_store.load(conn, record.task_id)
    assert stored is not None and (stored.progress, stored.stage) == (0, None)

    time.sleep(PROGRESS_MIN_INTERVAL_S + 0.05)
    report(Stage.RECOGNITION, 0.5)
    report(Stage.PUNCTUATION, 0.9)  # at once after a write: skipped
    stored = task_store.load(conn, record.task_id)
    assert stored is not None and (stored.progress, stored.stage) == (50, Stage.RECOGNITION)

    time.sleep(PROGRESS_MIN_INTERVAL_S + 0.05)
    report(Stage.RECOGNITION, 0.52)  # under PROGRESS_STEP points: still skipped
    report(Stage.PUNCTUATION, 0.9)
    stored = task_store.load(conn, record.task_id)
    assert stored is not None and (stored.progress, stored.stage) == (90, Stage.PUNCTUATION)
