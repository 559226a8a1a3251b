"""Unit tests of the worker-side job logic that faults cannot trigger here (no GPU to run out of
memory): a fake recognizer stands in for the engine, everything else is the real code."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from rq import Queue
from rq.timeouts import JobTimeoutException

from src.asr.engine import recognize_with_oom_retry
from src.asr.recognizer import RecognitionError, Transcript
from src.config import DEFAULT_BATCH_JOBS_CPU, DEFAULT_BATCH_JOBS_GPU, Settings
from src.engine.interface import EngineInput
from src.queue import job_queue
from src.records.redis_client import AUDIO_PINNED_KEY
from src.uploads import recordings
from src.worker.jobs import describe_failure
from tests.support.fixtures import make_settings


class FakeRecognizer:
    def __init__(self, failures: list[RecognitionError]) -> None:
        self.failures = failures
        self.batches: list[int] = []

    def recognize(self, path: Path, *, batch_size_s: int, **_: object) -> Transcript:
        self.batches.append(batch_size_s)
        if self.failures:
            raise self.failures.pop(0)
        return Transcript("ok", 1.0, [], [], [], 0.1, 0.1, "zh")


def item(batch: int = 400) -> EngineInput:
    return EngineInput(task_id="t", path=Path("x"), batch_size_s=batch)


def test_out_of_memory_is_retried_once_with_a_smaller_batch():
    fake = FakeRecognizer([RecognitionError("CUDA out of memory", out_of_memory=True)])
    result = recognize_with_oom_retry(fake, item(400))  # type: ignore[arg-type]
    assert result.text == "ok"
    assert fake.batches == [400, 100]


def test_a_second_out_of_memory_fails_the_job():
    oom = [RecognitionError("oom", out_of_memory=True), RecognitionError("oom", out_of_memory=True)]
    fake = FakeRecognizer(oom)
    with pytest.raises(RecognitionError):
        recognize_with_oom_retry(fake, item(400))  # type: ignore[arg-type]
    assert fake.batches == [400, 100]


def test_other_errors_are_not_retried():
    fake = FakeRecognizer([RecognitionError("shape mismatch")])
    with pytest.raises(RecognitionError):
        recognize_with_oom_retry(fake, item())  # type: ignore[arg-type]
    assert len(fake.batches) == 1


def test_failure_messages():
    wrapped = RecognitionError("JobTimeoutException: ...")
    wrapped.__cause__ = JobTimeoutException("Task exceeded maximum timeout value (600 seconds)")
    assert describe_failure(RecognitionError, wrapped, 600) == "Processing timeout (600s exceeded)"
    timeout = JobTimeoutException("x")
    assert describe_failure(JobTimeoutException, timeout, 9) == "Processing timeout (9s exceeded)"
    assert describe_failure(KeyError, KeyError("/secret/path"), 1) == "Recognition failed: KeyError"


def test_claim_takes_only_queued_jobs_once_and_return_puts_them_back_in_order(
    conn: redis.Redis, settings: Settings
):
    queue = Queue(settings.rq_queue_name, connection=conn)
    ids = [queue.enqueue("builtins.print", i, job_id=f"job-{i}").id for i in range(5)]
    assert job_queue.peek(queue, 3) == ids[:3]
    got = job_queue.claim(conn, queue, "w1", [ids[1], ids[3], "job-missing"])
    assert got == [ids[1], ids[3]]
    assert job_queue.claim(conn, queue, "w2", [ids[1], ids[2]]) == [ids[2]]  # no double claim
    assert queue.get_job_ids() == [ids[0], ids[4]]
    assert job_queue.claimed(conn, "w1") == [ids[1], ids[3]]
    assert job_queue.claimers(conn) == ["w1", "w2"]

    queue.fetch_job(ids[3]).delete()  # deleted while claimed: not returned
    assert job_queue.return_claimed(conn, queue, "w1") == [ids[1]]
    assert queue.get_job_ids() == [ids[1], ids[0], ids[4]]
    assert job_queue.claimed(conn, "w1") == [] and job_queue.claimers(conn) == ["w2"]
    # A claimed job already back in the queue is not pushed twice.
    queue.push_job_id(ids[2], at_front=True)
    assert job_queue.return_claimed(conn, queue, "w2") == []
    assert queue.get_job_ids().count(ids[2]) == 1


def test_cpu_threads_share_the_cores_among_workers_unless_set(
    monkeypatch: pytest.MonkeyPatch, storage: Path
):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    assert make_settings(6379, storage, rq_worker_count=2).cpu_threads == 4
    assert make_settings(6379, storage, rq_worker_count=16).cpu_threads == 1
    assert make_settings(6379, storage, asr_cpu_threads=3).cpu_threads == 3


def test_batching_defaults_by_device_and_can_be_set(storage: Path):
    assert make_settings(6379, storage, asr_device="cuda").batch_jobs == DEFAULT_BATCH_JOBS_GPU
    assert make_settings(6379, storage, asr_device="cpu").batch_jobs == DEFAULT_BATCH_JOBS_CPU
    assert make_settings(6379, storage, asr_device="cpu", asr_batch_jobs=4).batch_jobs == 4


def test_retention_skips_pinned_recordings_without_reading_their_tasks(
    conn: redis.Redis, storage: Path
):
    settings = make_settings(6379, storage, max_recordings=3)
    settings.recordings_dir.mkdir(parents=True)
    names = [f"2026-11-28_{i:03d}_{'0' * 24}.ogg" for i in range(10)]
    for i, name in enumerate(names):
        (settings.recordings_dir / name).write_bytes(b"x")
        recordings.index_recording(conn, name, float(i))  # pinned: queued
    for name in names[:4]:  # the four oldest finished (no task record left: expired)
        recordings.unpin(conn, name)
    removed = recordings.enforce_retention(conn, settings)
    assert sorted(removed) == names[:4]
    assert sorted(p.name for p in settings.recordings_dir.iterdir()) == names[4:]
    recordings.delete_recording(conn, settings, names[5])
    assert not conn.sismember(AUDIO_PINNED_KEY, names[5])
