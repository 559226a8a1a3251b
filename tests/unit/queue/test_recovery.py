"""The abandoned-job sweep against a real Redis and RQ's own bookkeeping: who owns a started job,
and which deaths count towards the poison limit.

A job is "started" here by ASRWorker's real prepare_execution / prepare_job_execution (the same
Redis writes a running worker makes); its owner is a process that has exited. The end-to-end
versions, with workers SIGKILLed for real, are in tests/system/test_worker_faults.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from src.config import Settings
from src.queue import job_queue, recovery
from src.queue.recovery import MAX_ABANDONS, Owner
from src.records import task_store
from src.records.task_store import TaskStatus
from src.worker.process import ASRWorker
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
    assert record is not None and record.status == TaskStatus.QUEUED
    assert record.abandons == 1  # alone, Redis up: this death may be the job's doing


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
    assert record.status == TaskStatus.FAILED
    assert record.error is not None and "3 times" in record.error and "alone" in record.error
    assert conn.ttl(f"asr:task:{task_id}") > 0
    assert Job.fetch(task_id, connection=conn).get_status() == JobStatus.FAILED
    assert task_id in FailedJobRegistry(queue=queue).get_job_ids()
    assert queue.get_job_ids() == []


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
