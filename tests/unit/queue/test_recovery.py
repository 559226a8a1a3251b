"""The abandoned-job sweep against a real Redis and RQ's own bookkeeping: who owns a started job,
and which deaths count towards the poison limit; then what recovery does with a stopped worker's
batch and how it fails a task.

A job is "started" here by ASRWorker's real prepare_execution / prepare_job_execution (the same
Redis writes a running worker makes); its owner is a process that has exited. The end-to-end
versions, with workers SIGKILLed for real, are in tests/system/test_worker_faults.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from loguru import logger
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from src.config import Settings
from src.queue import job_queue, recovery
from src.queue.recovery import MAX_ABANDONS, Owner
from src.records import task_store
from src.records.redis_client import AUDIO_PINNED_KEY, FAILURES_KEY, task_key
from src.records.task_store import TaskStatus
from src.results import history, metrics, stats
from src.uploads import recordings
from src.vocabulary import Stage
from src.worker.process import ASRWorker
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer, wait_for
from tests.support.records import new_task


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def start(conn: redis.Redis, queue: Queue, task_id: str, owner: Owner) -> ASRWorker:
    """Take the job off the queue and start it the way the worker does, as `owner`."""
    worker = ASRWorker([queue], connection=conn, name=owner.name)
    worker.owner = owner
    job = Job.fetch(task_id, connection=conn)
    conn.lrem(queue.key, 1, task_id)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    task_store.update(conn, task_id, status=TaskStatus.PROCESSING, attempts=1)
    return worker


def beacon(conn: redis.Redis, owner: Owner) -> None:
    payload = {"name": owner.name, "incarnation": owner.incarnation, "pid": owner.pid}
    conn.set(f"asr:worker:{owner.name}", json.dumps({**payload, "hostname": owner.hostname}))


def test_a_restarted_worker_of_the_same_name_does_not_own_the_old_job(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    old = Owner(name="worker-1", pid=dead_pid())
    start(conn, queue, task_id, old)
    # The replacement: same name, a live pid (this process), its own beacon.
    beacon(conn, Owner(name="worker-1"))
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    assert queue.get_job_ids() == [task_id]
    record = task_store.load(conn, task_id)
    assert record is not None
    assert (record.status, record.stage, record.progress) == (TaskStatus.QUEUED, Stage.REQUEUED, 0)
    assert record.abandons == 1  # alone, Redis up: this death may be the job's doing
    assert conn.ttl(task_key(task_id)) == -1  # waits again: no expiry until it ends


def test_a_running_owner_keeps_its_job(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    me = Owner(name="worker-1")
    start(conn, queue, task_id, me)
    beacon(conn, me)
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    assert StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == [task_id]


def test_a_job_that_kills_its_worker_three_times_alone_is_failed(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    for death in range(1, MAX_ABANDONS + 1):
        start(conn, queue, task_id, Owner(name=f"worker-{death}", pid=dead_pid()))
        assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
        record = task_store.load(conn, task_id)
        assert record is not None
        if death < MAX_ABANDONS:
            assert (record.status, record.abandons) == (TaskStatus.QUEUED, death)
            assert conn.ttl(task_key(task_id)) == -1
    assert record.status == TaskStatus.FAILED
    assert record.error is not None and "3 times" in record.error and "alone" in record.error
    assert settings.task_ttl_seconds - 10 < conn.ttl(task_key(task_id)) <= settings.task_ttl_seconds
    assert Job.fetch(task_id, connection=conn).get_status() == JobStatus.FAILED
    assert task_id in FailedJobRegistry(queue=queue).get_job_ids()
    assert queue.get_job_ids() == []
    assert metrics.failures(conn.hgetall(FAILURES_KEY))["abandoned"] == 1


def test_deaths_of_several_workers_at_once_are_not_counted(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    tasks = [new_task(conn, settings, queue, n) for n in (1, 2)]
    for n, task_id in enumerate(tasks, 1):
        start(conn, queue, task_id, Owner(name=f"worker-{n}", pid=dead_pid()))
    assert sorted(recovery.requeue_abandoned(conn, queue, settings)) == sorted(tasks)
    for task_id in tasks:
        record = task_store.load(conn, task_id)
        assert record is not None and (record.status, record.abandons) == (TaskStatus.QUEUED, 0)


def test_a_death_during_a_redis_outage_is_not_counted(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start(conn, queue, task_id, Owner(name="worker-1", pid=dead_pid()))
    recovery.note_redis_outage(conn, time.time())
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    record = task_store.load(conn, task_id)
    assert record is not None and record.abandons == 0


def test_a_death_across_a_redis_restart_is_not_counted(tmp_path: Path):
    """A private redis-server (AOF, as deployed) restarted for real while the dead owner's job
    was started: the sweep that finds it after the restart does not count the death."""
    server = RedisServer(tmp_path / "redis").start()
    try:
        settings = make_settings(server.port, tmp_path / "storage")
        conn = server.client()
        queue = job_queue.get_queue(conn, settings)
        task_id = new_task(conn, settings, queue)
        start(conn, queue, task_id, Owner(name="worker-1", pid=dead_pid()))
        # Redis's uptime is in whole seconds: start the job over a second before the restart.
        time.sleep(1.5)
        server.stop(signal.SIGTERM)
        server.start()
        conn = server.client()
        lines: list[str] = []
        sink = logger.add(lambda message: lines.append(message.record["message"]), level="INFO")
        try:
            requeued = recovery.requeue_abandoned(
                conn, job_queue.get_queue(conn, settings), settings
            )
        finally:
            logger.remove(sink)
        assert requeued == [task_id]
        record = task_store.load(conn, task_id)
        assert record is not None and (record.status, record.abandons) == (TaskStatus.QUEUED, 0)
        assert [line for line in lines if "not counted: Redis restarted while it ran" in line]
    finally:
        server.stop()


def test_an_owner_that_moved_on_lost_the_jobs_end(conn: redis.Redis, settings: Settings):
    """The owner lives but runs another job (its last writes for this one were lost, e.g. to a
    Redis restart): a still-processing task is requeued, a finished one only loses the entry."""
    queue = job_queue.get_queue(conn, settings)
    running, finished = new_task(conn, settings, queue, 1), new_task(conn, settings, queue, 2)
    me = Owner(name="worker-1")
    beacon(conn, me)
    for task_id in (running, finished):
        start(conn, queue, task_id, me)
        job = Job.fetch(task_id, connection=conn)
        job.started_at = datetime.now(UTC) - timedelta(seconds=recovery.MOVED_ON_GRACE_S + 5)
        job.save()
    task_store.update(conn, finished, status=TaskStatus.DONE)
    conn.hset("rq:worker:worker-1", "current_job", "some-other-job")
    assert recovery.requeue_abandoned(conn, queue, settings) == [running]
    assert queue.get_job_ids() == [running]
    assert StartedJobRegistry(queue=queue).get_job_ids(cleanup=False) == []
    record = task_store.load(conn, finished)
    assert record is not None and record.status == TaskStatus.DONE


def test_an_owner_survives_its_json_and_each_process_is_a_new_incarnation():
    owner = Owner(name="worker-1", pid=4321, hostname="gpu-box")
    assert Owner.from_json(owner.to_json()) == owner
    assert Owner.from_json(owner.to_json().encode()) == owner
    assert Owner(name="worker-1").incarnation != Owner(name="worker-1").incarnation


def test_pid_alive_tells_a_running_process_from_a_gone_or_zombie_one():
    assert recovery.pid_alive(os.getpid())
    assert not recovery.pid_alive(dead_pid())
    assert not recovery.pid_alive(0) and not recovery.pid_alive(-1)
    zombie = subprocess.Popen(["true"])  # exits at once; not reaped until wait()
    stat = Path(f"/proc/{zombie.pid}/stat")
    try:
        wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", 10, 0.01, "exit")
        assert not recovery.pid_alive(zombie.pid)
    finally:
        zombie.wait()


def test_a_stopped_workers_unstarted_batch_goes_back_as_queued(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3)]
    assert job_queue.claim(conn, queue, "worker-1", ids[:2]) == ids[:2]
    for task_id in ids[:2]:
        task_store.update(conn, task_id, status=TaskStatus.PROCESSING, stage="decode", progress=5)
    assert recovery.return_claimed(conn, queue, "worker-1") == ids[:2]
    assert queue.get_job_ids() == ids
    for task_id in ids[:2]:
        record = task_store.load(conn, task_id)
        assert record is not None
        assert (record.status, record.stage, record.progress) == (
            TaskStatus.QUEUED,
            Stage.REQUEUED,
            0,
        )
    assert recovery.return_claimed(conn, queue, "worker-1") == []


def test_mark_failed_fails_the_task_everywhere_at_once(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    recordings.index_recording(conn, f"{task_id}.wav")  # pinned while queued
    enqueued_at = Job.fetch(task_id, connection=conn).enqueued_at
    assert enqueued_at is not None
    task_store.update(conn, task_id, started_at=enqueued_at + timedelta(seconds=2.5))
    failed = recovery.mark_failed(
        conn,
        settings,
        task_id,
        "Recognition failed: KeyError",
        reason="other",
        enqueued_at=enqueued_at,
    )
    assert failed is not None and task_store.load(conn, task_id) == failed
    assert (failed.status, failed.stage) == (TaskStatus.FAILED, Stage.FAILED)
    assert failed.error == "Recognition failed: KeyError" and failed.finished_at is not None
    assert settings.task_ttl_seconds - 10 < conn.ttl(task_key(task_id)) <= settings.task_ttl_seconds
    (entry,) = history.latest(conn, 10)
    assert (entry.task_id, entry.status) == (task_id, "failed")
    lines = [json.loads(line) for line in settings.history_file.read_text().splitlines()]
    assert lines == [entry.model_dump(mode="json")]
    assert not conn.sismember(AUDIO_PINNED_KEY, f"{task_id}.wav")  # retention may take it now
    assert stats.read(conn)["failed"] == 1
    assert metrics.failures(conn.hgetall(FAILURES_KEY))["other"] == 1
    wait = metrics.histogram(metrics.WAIT, conn.hgetall(metrics.WAIT.key))
    assert (wait.count, wait.sum) == (1, 2.5)  # from its enqueue to its start


def test_mark_failed_of_a_deleted_task_writes_no_history(conn: redis.Redis, settings: Settings):
    missing = "2026-11-29_001_" + "0" * 24
    assert recovery.mark_failed(conn, settings, missing, "boom", reason="timeout") is None
    assert history.latest(conn, 10) == []
    assert not settings.history_file.exists()
    assert metrics.failures(conn.hgetall(FAILURES_KEY))["timeout"] == 1  # counted all the same
