"""src/queue/job_queue.py against a real Redis and RQ: enqueueing by name, positions, worker
readiness, batch claims and the wait estimate."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import pytest
import redis
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout
from rq.job import Callback, Job
from rq.registry import FailedJobRegistry

from src.config import Settings
from src.queue import job_queue
from src.queue.job_queue import get_lanes
from src.records import task_store
from src.records.redis_client import BACKLOG_KEY, READY_WORKERS_KEY, worker_key
from src.results import stats
from src.vocabulary import Priority
from tests.support.fixtures import make_settings
from tests.support.records import new_task

TASK_ID = "2026-11-29_001_" + "ab" * 12


def behind(jobs: int) -> dict[Priority, int]:
    """Jobs ahead of one, all in the normal lane."""
    return {Priority.NORMAL: jobs}


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
    assert job_queue.return_claimed(conn, get_lanes(conn, settings), "w1") == [ids[1]]
    assert queue.get_job_ids() == [ids[1], ids[0], ids[4]]
    assert job_queue.claimed(conn, "w1") == [] and job_queue.claimers(conn) == ["w2"]
    # A claimed job already back in the queue is not pushed twice.
    queue.push_job_id(ids[2], at_front=True)
    assert job_queue.return_claimed(conn, get_lanes(conn, settings), "w2") == []
    assert queue.get_job_ids().count(ids[2]) == 1


def test_estimated_wait_follows_the_observed_throughput(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    assert job_queue.estimated_wait(conn, behind(2), 1, 15.0) == 3 * job_queue.DEFAULT_JOB_SECONDS
    # Recent history: one 300 s recording (5 s of worker time), then a batch of four 15 s voice
    # notes whose pass took 1.3 s (the first job carries it, the others only their bookkeeping).
    for busy, audio in ((5.0, 300.0), (1.0, 15.0), (0.1, 15.0), (0.1, 15.0), (0.1, 15.0)):
        stats.record_job(conn, busy, audio)
    per_job, per_audio_second = stats.recent_throughput(conn)  # type: ignore[misc]
    assert (round(per_job, 2), round(per_audio_second, 4)) == (1.26, 0.0175)
    # Ten 15 s voice notes wait; the sweep counts their audio.
    for n in range(1, 11):
        task_id = new_task(conn, settings, queue, n)
        task_store.update(conn, task_id, audio_duration=15.0)
    assert job_queue.refresh_backlog(conn, get_lanes(conn, settings))["normal"] == {
        "jobs": 10,
        "audio_seconds": 150.0,
    }
    # The 10th note, 2 workers: 9 notes ahead + its own = 150 s of audio x 0.0175 / 2 = 1.3 s.
    # A mean per job (1.26 s, inflated by the long recording) would have said 10 x 1.26 / 2.
    assert job_queue.estimated_wait(conn, behind(9), 2, 15.0) == 2
    # A recording whose length the upload check could not tell counts as the queue's mean.
    task_store.update(conn, new_task(conn, settings, queue, 11), audio_duration=None)
    assert job_queue.refresh_backlog(conn, get_lanes(conn, settings))["normal"] == {
        "jobs": 11,
        "audio_seconds": 165.0,
    }
    # Only the most recent jobs count.
    for _ in range(stats.JOB_SECONDS_KEPT):
        stats.record_job(conn, 0.5, 10.0)
    assert stats.recent_throughput(conn) == (0.5, 0.05)


def test_a_task_is_enqueued_by_name_under_the_task_id(conn: redis.Redis, storage: Path):
    settings = make_settings(6379, storage, rq_worker_timeout=900, task_ttl_seconds=7200)
    queue = job_queue.get_queue(conn, settings)
    job = job_queue.enqueue_task(queue, TASK_ID, settings)
    stored = Job.fetch(TASK_ID, connection=conn)
    assert job.id == stored.id == TASK_ID
    assert stored.func_name == job_queue.JOB_FUNC and stored.args == (TASK_ID,)
    assert (stored.timeout, stored.result_ttl) == (900, 7200)
    assert stored.failure_ttl == 86400  # a failure stays a day at least, for /queue/status
    assert conn.hget(stored.key, "failure_callback_name") == job_queue.FAILURE_CALLBACK.encode()
    longer = make_settings(6379, storage, task_ttl_seconds=2 * 86400)
    other = job_queue.enqueue_task(queue, TASK_ID[:-1] + "f", longer)
    assert Job.fetch(other.id, connection=conn).failure_ttl == 2 * 86400


def test_position_counts_from_one_and_ends_when_a_worker_has_the_job(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3)]
    assert [job_queue.position(queue, i) for i in ids] == [1, 2, 3]
    assert job_queue.claim(conn, queue, "worker-1", [ids[0]]) == [ids[0]]
    assert [job_queue.position(queue, i) for i in ids] == [None, 1, 2]
    assert job_queue.position(queue, "never-queued") is None


def test_peek_looks_without_taking(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3)]
    assert job_queue.peek(queue, 2) == ids[:2]
    assert job_queue.peek(queue, 10) == ids
    assert queue.get_job_ids() == ids
    assert job_queue.claim(conn, queue, "worker-1", []) == []
    assert job_queue.claimers(conn) == []


def test_only_workers_with_a_live_beacon_are_ready(conn: redis.Redis):
    job_queue.publish_readiness(conn, "worker-1", '{"name": "worker-1"}', ttl_s=30)
    job_queue.publish_readiness(conn, "worker-2", '{"name": "worker-2"}', ttl_s=30)
    assert job_queue.ready_workers(conn) == ["worker-1", "worker-2"]
    assert 20 < conn.ttl(worker_key("worker-1")) <= 30
    conn.delete(worker_key("worker-2"))  # its beacon expired: killed, or stuck
    assert job_queue.ready_workers(conn) == ["worker-1"]
    job_queue.withdraw_readiness(conn, "worker-1")
    assert job_queue.ready_workers(conn) == []
    assert conn.zrange(READY_WORKERS_KEY, 0, -1) == [b"worker-2"]


def test_names_not_seen_for_a_minute_leave_the_index(conn: redis.Redis):
    conn.zadd(READY_WORKERS_KEY, {"worker-gone": time.time() - 61, "worker-quiet": time.time()})
    job_queue.publish_readiness(conn, "worker-1", "{}", ttl_s=30)
    assert sorted(conn.zrange(READY_WORKERS_KEY, 0, -1)) == [b"worker-1", b"worker-quiet"]


def test_before_any_job_finished_the_estimate_is_the_default_per_job(conn: redis.Redis):
    seconds = job_queue.DEFAULT_JOB_SECONDS
    assert job_queue.estimated_wait(conn, behind(0), 1, None) == seconds
    assert job_queue.estimated_wait(conn, behind(2), 2, 15.0) == math.ceil(3 * seconds / 2)
    assert job_queue.estimated_wait(conn, behind(2), 0, None) == 3 * seconds  # no worker: as if one


def test_until_the_queue_is_counted_the_jobs_ahead_are_taken_to_be_like_this_one(
    conn: redis.Redis,
):
    stats.record_job(conn, 2.0, 20.0)  # 2 s per job, 0.1 s per second of audio
    # Two jobs ahead of a 30 s clip: 3 x 30 s of audio x 0.1 = 9 s.
    assert job_queue.estimated_wait(conn, behind(2), 1, 30.0) == 9
    # A clip of unknown length: by jobs instead, 3 x 2 s.
    assert job_queue.estimated_wait(conn, behind(2), 1, None) == 6
    # Once counted, the queue's own mean is used for the jobs ahead: 2 x 5 s + 30 s of audio.
    conn.set(BACKLOG_KEY, json.dumps({"normal": {"jobs": 4, "audio_seconds": 20.0}}))
    assert job_queue.estimated_wait(conn, behind(2), 1, 30.0) == 4


# --- more of the same, found missing by mutation testing (report/MUTATION.md) ----------------


def test_the_queue_is_the_configured_one(conn: redis.Redis, storage: Path):
    settings = make_settings(6379, storage, rq_queue_name="asr-test")
    queue = job_queue.get_queue(conn, settings)
    assert queue.name == "asr-test" and queue.key == "rq:queue:asr-test"  # what `rq info` shows


def test_queue_status_counts_jobs_by_state_and_workers_by_activity(
    conn: redis.Redis, settings: Settings, storage: Path
):
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3, 4)]
    busy = Worker([queue], connection=conn, name="worker-1")
    busy.register_birth()
    job = Job.fetch(ids[0], connection=conn)
    conn.lrem(queue.key, 1, ids[0])
    busy.prepare_execution(job)  # RQ's own bookkeeping of a started job: the worker is busy
    busy.prepare_job_execution(job)
    for name in ("worker-2", "worker-3"):
        Worker([queue], connection=conn, name=name).register_birth()  # idle
    conn.lrem(queue.key, 1, ids[1])
    FailedJobRegistry(queue=queue).add(Job.fetch(ids[1], connection=conn), ttl=60)
    Worker(
        [job_queue.get_queue(conn, make_settings(1, storage, rq_queue_name="other"))],
        connection=conn,
        name="elsewhere",
    ).register_birth()  # another service's queue
    assert job_queue.queue_status(conn, get_lanes(conn, settings)) == {
        "queued": 2,
        "processing": 1,
        "failed": 1,
        "workers": 3,
        "workers_busy": 1,
        "lanes": {"high": 0, "normal": 2, "low": 0},
    }


def test_jobs_after_a_current_one_are_migrated_too_and_callbacks_are_kept_or_left_unset(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    job_queue.enqueue_task(queue, "t-new", settings)  # today's, first in the queue
    queue.enqueue(
        "src.asr.jobs.transcribe",
        "t-old",
        job_id="t-old",
        on_failure=Callback(job_queue.FAILURE_CALLBACK),  # already today's callback
    )
    queue.enqueue("src.api.tasks.transcribe", "t-bare", job_id="t-bare")  # no callback at all
    assert sorted(job_queue.migrate_legacy_jobs(queue)) == ["t-bare", "t-old"]
    old = Job.fetch("t-old", connection=conn)
    assert old._failure_callback_name == job_queue.FAILURE_CALLBACK
    assert Job.fetch("t-bare", connection=conn)._failure_callback_name is None


def test_withdrawing_readiness_removes_the_beacon_itself(conn: redis.Redis):
    """Recovery reads the beacon to tell a restarted worker from its predecessor."""
    assert job_queue.ready_workers(conn) == []  # no worker ever: nothing to read
    job_queue.publish_readiness(conn, "worker-1", '{"name": "worker-1"}', ttl_s=30)
    job_queue.withdraw_readiness(conn, "worker-1")
    assert conn.exists(worker_key("worker-1")) == 0


def test_every_ready_worker_is_listed(conn: redis.Redis):
    names = [f"worker-{n}" for n in range(1, 6)]
    for name in names:
        job_queue.publish_readiness(conn, name, "{}", ttl_s=30)
    assert job_queue.ready_workers(conn) == names


def test_throughput_without_audio_lengths_is_taken_per_job(conn: redis.Redis):
    stats.record_job(conn, 4.0, 0.0)  # jobs whose audio length nobody knew
    assert (
        job_queue.estimated_wait(conn, behind(2), 1, 30.0) == 12
    )  # 3 jobs x 4 s, not 0 s of audio


def test_the_estimate_can_be_one_second_but_never_less(conn: redis.Redis):
    stats.record_job(conn, 0.01, 10.0)
    assert job_queue.estimated_wait(conn, behind(0), 1, 1.0) == 1


def test_an_empty_queue_has_an_empty_backlog_and_audio_is_kept_to_the_millisecond(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    assert job_queue.refresh_backlog(conn, get_lanes(conn, settings))["normal"] == {
        "jobs": 0,
        "audio_seconds": 0,
    }
    task_store.update(conn, new_task(conn, settings, queue, 1), audio_duration=1.23456)
    assert (
        job_queue.refresh_backlog(conn, get_lanes(conn, settings))["normal"]["audio_seconds"]
        == 1.235
    )


def test_returning_a_batch_goes_on_past_jobs_it_leaves_alone(conn: redis.Redis, settings: Settings):
    """Returned newest claim first: one already back in the queue or already started must not
    stop the older claims from going back."""
    queue = job_queue.get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3, 4)]
    assert job_queue.claim(conn, queue, "worker-1", ids[:3]) == ids[:3]
    queue.push_job_id(ids[2], at_front=True)  # the newest claim is back in the queue already
    assert job_queue.return_claimed(conn, get_lanes(conn, settings), "worker-1") == ids[:2]
    assert queue.get_job_ids() == [*ids[:3], ids[3]]
    assert job_queue.claimers(conn) == []

    assert job_queue.claim(conn, queue, "worker-2", ids[:2]) == ids[:2]
    started = Worker([queue], connection=conn, name="worker-2")
    job = Job.fetch(ids[1], connection=conn)
    started.prepare_execution(job)
    started.prepare_job_execution(job)  # the newest claim started: the sweep's, not ours
    assert job_queue.return_claimed(conn, get_lanes(conn, settings), "worker-2") == [ids[0]]


def test_every_job_on_the_queue_gets_the_worker_timeout(conn: redis.Redis, storage: Path):
    """A task's job carries it whatever queue object enqueued it; a job enqueued without one
    (an earlier release's, or `rq enqueue`) gets it from the queue."""
    settings = make_settings(6379, storage, rq_worker_timeout=900)
    plain = Queue(settings.rq_queue_name, connection=conn)  # RQ's default timeout: 180 s
    job_queue.enqueue_task(plain, TASK_ID, settings)
    assert Job.fetch(TASK_ID, connection=conn).timeout == 900
    other = job_queue.get_queue(conn, settings).enqueue("builtins.print", job_id="other")
    assert Job.fetch(other.id, connection=conn).timeout == 900


def test_an_enqueue_in_a_transaction_waits_for_its_exec(conn: redis.Redis, settings: Settings):
    """Submit writes the record and the job in one MULTI/EXEC: neither may exist without the
    other, even if the process dies between queuing the commands and EXEC."""
    queue = job_queue.get_queue(conn, settings)
    with conn.pipeline() as pipe:
        pipe.multi()
        job_queue.enqueue_task(queue, TASK_ID, settings, pipe)
        assert queue.get_job_ids() == [] and not Job.exists(TASK_ID, connection=conn)
        pipe.execute()
    assert queue.get_job_ids() == [TASK_ID]
    assert Job.fetch(TASK_ID, connection=conn).func_name == job_queue.JOB_FUNC


def test_a_worker_takes_the_first_non_empty_queue_and_is_recorded_until_it_starts_the_job(
    conn: redis.Redis, settings: Settings
):
    from src.worker.process import ASRWorker

    low = job_queue.ServiceQueue("lane-low", connection=conn)
    high = job_queue.ServiceQueue("lane-high", connection=conn)
    low.enqueue("builtins.print", job_id="job-low")
    high.enqueue("builtins.print", job_id="job-high")
    worker = ASRWorker([high, low], connection=conn, name="taker")
    got = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert got is not None and (got[0].id, got[1].name) == ("job-high", "lane-high")
    held = job_queue.held_jobs(conn)
    assert list(held) == ["job-high"]
    assert held["job-high"]["queue"] == high.key
    assert held["job-high"]["incarnation"] == worker.owner.incarnation
    assert held["job-high"]["pid"] == worker.owner.pid
    assert abs(held["job-high"]["at"] - time.time()) < 5
    # Starting it is the transaction that ends the hold.
    worker.prepare_execution(got[0])
    assert job_queue.held_jobs(conn) == {}
    got = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert got is not None and got[0].id == "job-low"
    assert worker.dequeue_job_and_maintain_ttl(timeout=1, max_idle_time=1) is None  # both empty


def test_a_waiting_worker_wakes_at_a_push_and_skips_deleted_jobs(
    conn: redis.Redis, settings: Settings
):
    queue = job_queue.get_queue(conn, settings)
    queue.enqueue("builtins.print", job_id="job-gone").delete(remove_from_queue=False)
    began = time.monotonic()
    assert job_queue.ServiceQueue.dequeue_any([queue], None, connection=conn) is None
    assert job_queue.held_jobs(conn) == {}  # the deleted job left no hold behind

    def push_later() -> None:
        time.sleep(0.3)
        job_queue.get_queue(conn, settings).enqueue("builtins.print", job_id="job-late")

    pusher = threading.Thread(target=push_later)
    began = time.monotonic()
    pusher.start()
    got = job_queue.ServiceQueue.dequeue_any([queue], 5, connection=conn)
    waited = time.monotonic() - began
    pusher.join()
    assert got is not None and got[0].id == "job-late"
    # Woken by the push's token, not by the once-a-second look.
    assert 0.25 < waited < job_queue.WAKE_WAIT_S, waited
    began = time.monotonic()
    with pytest.raises(DequeueTimeout):
        job_queue.ServiceQueue.dequeue_any([queue], 1, connection=conn)
    assert time.monotonic() - began >= 0.95
    assert conn.llen(job_queue.ServiceQueue.wake_key(queue.key)) <= job_queue.WAKE_TOKENS_KEPT


def test_a_worker_on_its_queues_wakes_at_a_delivery_and_takes_transcriptions_first(
    conn: redis.Redis, settings: Settings
):
    from src.worker.process import ASRWorker

    queues = job_queue.worker_queues(conn, settings)
    lanes = [q.name for q in job_queue.get_lanes(conn, settings).ordered()]
    assert [q.name for q in queues] == [*lanes, f"{settings.rq_queue_name}:callbacks"]
    worker = ASRWorker(queues, connection=conn, name="taker")
    task_id = new_task(conn, settings, queues[0])

    def deliver_later() -> None:
        time.sleep(0.3)
        job_queue.enqueue_callback(conn, settings, "2026-11-29_done")

    got = worker.dequeue_job_and_maintain_ttl(timeout=1)
    assert got is not None and got[0].id == task_id  # queued first, and first by priority
    worker.prepare_execution(got[0])
    pusher = threading.Thread(target=deliver_later)
    began = time.monotonic()
    pusher.start()
    got = worker.dequeue_job_and_maintain_ttl(timeout=5)
    waited = time.monotonic() - began
    pusher.join()
    assert got is not None and got[1].name.endswith(":callbacks")
    assert 0.25 < waited < job_queue.WAKE_WAIT_S, waited  # woken by the delivery's push
    # Held like a transcription until started, so a worker killed in between loses nothing.
    assert job_queue.held_jobs(conn)[got[0].id]["queue"] == queues[-1].key
