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
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from loguru import logger
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from src.config import Settings
from src.queue import job_queue, recovery
from src.queue.recovery import MAX_ABANDONS, Owner
from src.records import task_store
from src.records.redis_client import (
    AUDIO_PINNED_KEY,
    DEATHS_KEY,
    FAILURES_KEY,
    IN_HAND_KEY,
    task_key,
)
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
        # Redis's uptime is in whole seconds: start the job well over a second before the restart.
        time.sleep(2.5)
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


def test_a_delivery_whose_worker_died_is_one_failed_attempt_retried_then_failed(
    conn: redis.Redis, settings: Settings
):
    settings = settings.model_copy(update={"callback_retry_intervals": [30]})
    task_id = new_task(conn, settings, job_queue.get_queue(conn, settings))
    deliveries = job_queue.callback_queue(conn, settings)
    delivery = job_queue.enqueue_callback(conn, settings, task_id).id
    start(conn, deliveries, delivery, Owner(name="worker-1", pid=dead_pid()))
    assert recovery.requeue_everywhere(conn, settings) == [delivery]
    # Not at once: after the back-off, as a failed POST would be, with one retry spent.
    assert ScheduledJobRegistry(queue=deliveries).get_job_ids() == [delivery]
    assert deliveries.get_job_ids() == []
    assert Job.fetch(delivery, connection=conn).retries_left == 0
    record = task_store.load(conn, task_id)
    assert record is not None
    assert record.status is TaskStatus.QUEUED  # the task itself is left as it was
    assert [a.error for a in record.callback_attempts] == [
        "the worker worker-1 stopped during the delivery"
    ]
    assert job_queue.release_due_callbacks(conn, settings) == []  # its back-off still runs
    start(conn, deliveries, delivery, Owner(name="worker-2", pid=dead_pid()))
    assert recovery.requeue_everywhere(conn, settings) == [delivery]  # no retry left: failed
    assert FailedJobRegistry(queue=deliveries).get_job_ids() == [delivery]
    assert Job.fetch(delivery, connection=conn).get_status() is JobStatus.FAILED
    assert StartedJobRegistry(queue=deliveries).get_job_ids(cleanup=False) == []


def test_a_stopped_workers_unstarted_batch_goes_back_as_queued(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3)]
    assert job_queue.claim(conn, queue, "worker-1", ids[:2]) == ids[:2]
    for task_id in ids[:2]:
        task_store.update(conn, task_id, status=TaskStatus.PROCESSING, stage="decode", progress=5)
    assert recovery.return_claimed(conn, job_queue.get_lanes(conn, settings), "worker-1") == ids[:2]
    assert queue.get_job_ids() == ids
    for task_id in ids[:2]:
        record = task_store.load(conn, task_id)
        assert record is not None
        assert (record.status, record.stage, record.progress) == (
            TaskStatus.QUEUED,
            Stage.REQUEUED,
            0,
        )
    assert recovery.return_claimed(conn, job_queue.get_lanes(conn, settings), "worker-1") == []


# A worker process that takes one job off the queue the way ASRWorker does, says so, and waits
# to be killed before it starts the job.
TAKE_AND_HANG = """
import sys, time
import redis
from src.queue import job_queue
from src.queue.recovery import Owner

conn = redis.Redis(port=int(sys.argv[1]))
queue = job_queue.ServiceQueue(sys.argv[2], connection=conn)
held = job_queue.ServiceQueue.held_by(Owner(name="worker-1").to_json())
job, _ = held.dequeue_any([queue], 5, connection=conn)
print(job.id, flush=True)
time.sleep(60)
"""


def test_a_job_whose_worker_died_between_taking_and_starting_it_goes_back_first(
    conn: redis.Redis, settings: Settings
):
    """RQ's BLPOP left such a job in no list at all: it was lost. Now the take names its
    holder, and the sweep (here as a restarted worker-1 runs it at start) puts it back."""
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2)]
    # Under scripts/mutation.py the child runs the mutant too, but it does not record which
    # functions it reached (mutmut's unpatched recorder refuses the `src` package's names).
    env = dict(os.environ)
    if env.get("MUTANT_UNDER_TEST") == "stats":
        env["MUTANT_UNDER_TEST"] = ""
    proc = subprocess.Popen(
        [sys.executable, "-c", TAKE_AND_HANG, str(settings.redis_port), queue.name],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == ids[0]
    assert queue.get_job_ids() == ids[1:]
    assert recovery.requeue_abandoned(conn, queue, settings) == []  # its holder lives
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    beacon(conn, Owner(name="worker-1"))  # the restarted worker-1
    assert recovery.requeue_abandoned(conn, queue, settings) == [ids[0]]
    assert queue.get_job_ids() == ids
    record = task_store.load(conn, ids[0])
    assert record is not None
    assert (record.status, record.stage, record.abandons) == (TaskStatus.QUEUED, Stage.REQUEUED, 0)
    assert job_queue.held_jobs(conn) == {}
    assert recovery.requeue_abandoned(conn, queue, settings) == []  # put back once only


def test_a_live_holder_that_never_started_its_job_loses_it_after_the_grace(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    me = Owner(name="worker-1")
    held = job_queue.ServiceQueue.held_by(me.to_json())
    got = held.dequeue_any([queue], None, connection=conn)
    assert got is not None and got[0].id == task_id
    beacon(conn, me)
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    entry = job_queue.held_jobs(conn)[task_id]
    entry["at"] -= recovery.MOVED_ON_GRACE_S + 1
    conn.hset(IN_HAND_KEY, task_id, json.dumps(entry))
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    assert queue.get_job_ids() == [task_id]


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


# --- more of the same, found missing by mutation testing (report/MUTATION.md) ----------------


def start_plainly(conn: redis.Redis, queue: Queue, task_id: str, name: str) -> Worker:
    """Start the job as a plain `rq worker` would: registered under its name, no owner record."""
    worker = Worker([queue], connection=conn, name=name)
    worker.register_birth()
    job = Job.fetch(task_id, connection=conn)
    conn.lrem(queue.key, 1, task_id)
    worker.prepare_execution(job)
    worker.prepare_job_execution(job)
    return worker


def default_signals() -> None:
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(sig, signal.SIG_DFL)


def backdate(conn: redis.Redis, task_id: str, seconds: float) -> None:
    job = Job.fetch(task_id, connection=conn)
    job.started_at = datetime.now(UTC) - timedelta(seconds=seconds)
    job.save()


def test_a_live_pid_under_a_newer_incarnation_is_not_the_owner(
    conn: redis.Redis, settings: Settings
):
    """The restarted worker may get the old pid back (a container's pid 1, say): the beacon's
    incarnation, not the pid, says the old process is gone."""
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start(conn, queue, task_id, Owner(name="worker-1"))  # this process's pid: alive
    beacon(conn, Owner(name="worker-1"))  # the same name, a new incarnation
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]


def test_an_owner_on_another_host_is_judged_by_its_beacon_alone(
    conn: redis.Redis, settings: Settings
):
    """RQ's registration of a SIGKILLed worker lives on for the job's timeout plus a minute:
    were it asked, a dead GPU box's job would wait that long (the remote-worker system test)."""
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    elsewhere = Owner(name="worker-9", pid=4242, hostname="another-host")
    start(conn, queue, task_id, elsewhere)
    beacon(conn, elsewhere)  # its own beacon, live: kept (its pid means nothing here)
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    conn.delete("asr:worker:worker-9")  # beacon gone (its TTL ran out): gone
    conn.delete("rq:worker:worker-9")
    conn.hset("rq:worker:worker-9", mapping={"pid": "4242", "hostname": "another-host"})
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]


def test_an_owner_on_another_host_whose_name_rq_gave_to_another_pid_is_gone(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start(conn, queue, task_id, Owner(name="worker-9", pid=4242, hostname="another-host"))
    conn.delete("rq:worker:worker-9")
    conn.hset("rq:worker:worker-9", mapping={"pid": "5151", "hostname": "another-host"})
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]


def test_an_owner_on_another_host_unknown_to_rq_is_gone(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start(conn, queue, task_id, Owner(name="worker-9", pid=4242, hostname="another-host"))
    conn.delete("rq:worker:worker-9")
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]


def test_a_job_of_a_plain_rq_worker_is_judged_by_the_workers_name(
    conn: redis.Redis, settings: Settings
):
    """No owner record (started by `rq worker`): a live process of that name keeps it."""
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start_plainly(conn, queue, task_id, "rq-1")  # registered with this host and this pid
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    conn.hset("rq:worker:rq-1", "hostname", "another-host")  # alive elsewhere, as far as we know
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    conn.hset("rq:worker:rq-1", mapping={"hostname": socket.gethostname(), "pid": dead_pid()})
    other = new_task(conn, settings, queue, 2)  # another worker died at the same time
    start(conn, queue, other, Owner(name="worker-2", pid=dead_pid()))
    assert sorted(recovery.requeue_abandoned(conn, queue, settings)) == sorted([task_id, other])
    record = task_store.load(conn, task_id)
    assert record is not None and record.abandons == 1  # no owner: no correlation to go by


def test_a_beacon_speaks_for_a_plain_workers_name_before_rq_does(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start_plainly(conn, queue, task_id, "rq-1")
    conn.hset("rq:worker:rq-1", "pid", dead_pid())  # RQ's entry is stale...
    beacon(conn, Owner(name="rq-1"))  # ...but a live process of that name publishes a beacon
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    conn.delete("rq:worker:rq-1", "asr:worker:rq-1")  # nothing knows the name any more
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]


def test_a_live_owner_is_given_time_to_start_and_may_run_one_job_long(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    me = Owner(name="worker-1")
    start(conn, queue, task_id, me)
    beacon(conn, me)
    conn.hset("rq:worker:worker-1", "current_job", "")  # RQ has not recorded it yet: a grace
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    backdate(conn, task_id, recovery.MOVED_ON_GRACE_S + 600)  # a long recording
    conn.hset("rq:worker:worker-1", "current_job", task_id)
    assert recovery.requeue_abandoned(conn, queue, settings) == []
    conn.delete("rq:worker:worker-1")  # RQ's registration lost: nothing says it moved on
    assert recovery.requeue_abandoned(conn, queue, settings) == []


def test_the_sweep_goes_on_past_jobs_it_keeps_or_cannot_find(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    gone, kept, plain, dead = (new_task(conn, settings, queue, n) for n in (1, 2, 3, 4))
    start(conn, queue, gone, Owner(name="worker-1", pid=dead_pid()))
    me = Owner(name="worker-2")
    start(conn, queue, kept, me)
    beacon(conn, me)
    start_plainly(conn, queue, plain, "rq-1")  # a live plain `rq worker`
    start(conn, queue, dead, Owner(name="worker-3", pid=dead_pid()))
    registry = StartedJobRegistry(queue=queue)
    order = {gone: 1, kept: 2, plain: 3, dead: 4}  # the sweep reads the registry in this order
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        conn.zadd(registry.key, {f"{job_id}:{execution_id}": time.time() + 100 + order[job_id]})
    conn.delete(Job.key_for(gone))  # its RQ job is gone (its entry stays behind)
    assert recovery.requeue_abandoned(conn, queue, settings) == [dead]
    assert sorted(registry.get_job_ids(cleanup=False)) == sorted([kept, plain])  # entry dropped


def test_a_job_whose_registry_entry_expired_is_still_requeued_not_failed(
    conn: redis.Redis, settings: Settings
):
    """The whole service was down longer than the job timeout: RQ's own cleanup would fail
    the job; the sweep requeues it."""
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start(conn, queue, task_id, Owner(name="worker-1", pid=dead_pid()))
    registry = StartedJobRegistry(queue=queue)
    ((job_id, execution_id),) = registry.get_job_and_execution_ids(cleanup=False)
    conn.zadd(registry.key, {f"{job_id}:{execution_id}": time.time() - 10})
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    assert task_id not in FailedJobRegistry(queue=queue).get_job_ids()


def test_a_requeued_job_goes_first_with_its_progress_reset(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    task_id, waiting = new_task(conn, settings, queue, 1), new_task(conn, settings, queue, 2)
    start(conn, queue, task_id, Owner(name="worker-1", pid=dead_pid()))
    task_store.update(conn, task_id, stage=Stage.RECOGNITION, progress=40)
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    assert queue.get_job_ids() == [task_id, waiting]
    record = task_store.load(conn, task_id)
    assert record is not None and (record.stage, record.progress) == (Stage.REQUEUED, 0)


def test_a_job_whose_task_record_is_gone_is_requeued_all_the_same(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    start(conn, queue, task_id, Owner(name="worker-1", pid=dead_pid()))
    task_store.delete(conn, task_id)
    assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    assert task_store.load(conn, task_id) is None  # not brought back


def test_a_death_counts_when_redis_ran_all_along_and_not_when_it_restarted_since(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    wait_for(lambda: conn.info("server")["uptime_in_seconds"] >= 2, 5, what="Redis up 2 s")
    counted, restarted = new_task(conn, settings, queue, 1), new_task(conn, settings, queue, 2)
    start(conn, queue, counted, Owner(name="worker-1", pid=dead_pid()))
    backdate(conn, counted, 1.5)  # Redis has been up longer than that
    assert recovery.requeue_abandoned(conn, queue, settings) == [counted]
    conn.delete(DEATHS_KEY)  # a later, unrelated death
    start(conn, queue, restarted, Owner(name="worker-2", pid=dead_pid()))
    backdate(conn, restarted, conn.info("server")["uptime_in_seconds"] + 30)
    assert recovery.requeue_abandoned(conn, queue, settings) == [restarted]
    abandons = {t: task_store.load(conn, t).abandons for t in (counted, restarted)}  # type: ignore[union-attr]
    assert abandons == {counted: 1, restarted: 0}


def test_a_failed_poison_job_says_why_keeps_its_failure_a_ttl_and_counts_its_wait(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    task_id = new_task(conn, settings, queue)
    for death in range(1, MAX_ABANDONS + 1):
        start(conn, queue, task_id, Owner(name=f"worker-{death}", pid=dead_pid()))
        enqueued_at = Job.fetch(task_id, connection=conn).enqueued_at
        assert enqueued_at is not None
        task_store.update(conn, task_id, started_at=enqueued_at + timedelta(seconds=1.5))
        assert recovery.requeue_abandoned(conn, queue, settings) == [task_id]
    record = task_store.load(conn, task_id)
    assert record is not None and record.error is not None
    assert "with Redis up" in record.error
    assert record.error.endswith("it may be what makes the worker crash")
    expires = conn.zscore(FailedJobRegistry(queue=queue).key, task_id)
    assert expires is not None
    assert abs(expires - (time.time() + settings.task_ttl_seconds)) < 10
    wait = metrics.histogram(metrics.WAIT, conn.hgetall(metrics.WAIT.key))
    assert (wait.count, wait.sum) == (1, 1.5)  # the last wait, from its requeue to its start


def test_pid_alive_leaves_the_process_alone():
    # Every signal at its default action (a `nohup` parent would have it ignore SIGHUP).
    sleeper = subprocess.Popen(["sleep", "30"], preexec_fn=default_signals)
    try:
        assert recovery.pid_alive(sleeper.pid)
        time.sleep(0.1)
        assert sleeper.poll() is None  # asking sent it no signal
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_alive_reads_the_state_after_the_last_parenthesis(tmp_path: Path):
    """/proc/PID/stat puts the command name in parentheses, and a name may hold ')' itself."""
    odd = tmp_path / "x) S 1"
    odd.symlink_to(shutil.which("true") or "/bin/true")
    zombie = subprocess.Popen([str(odd)])
    stat = Path(f"/proc/{zombie.pid}/stat")
    try:
        wait_for(lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", 10, 0.01, "exit")
        assert not recovery.pid_alive(zombie.pid)
    finally:
        zombie.wait()
