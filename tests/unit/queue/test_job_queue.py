"""src/queue/job_queue.py against a real Redis and RQ: batch claims and the wait estimate."""

from __future__ import annotations

import redis
from rq import Queue

from src.config import Settings
from src.queue import job_queue
from src.records import task_store
from src.results import stats
from tests.support.records import new_task


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


def test_estimated_wait_follows_the_observed_throughput(conn: redis.Redis, settings: Settings):
    queue = job_queue.get_queue(conn, settings)
    assert job_queue.estimated_wait(conn, 3, 1, 15.0) == 3 * job_queue.DEFAULT_JOB_SECONDS
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
    assert job_queue.refresh_backlog(conn, queue) == {"jobs": 10, "audio_seconds": 150.0}
    # The 10th note, 2 workers: 9 notes ahead + its own = 150 s of audio x 0.0175 / 2 = 1.3 s.
    # A mean per job (1.26 s, inflated by the long recording) would have said 10 x 1.26 / 2.
    assert job_queue.estimated_wait(conn, 10, 2, 15.0) == 2
    # A recording whose length the upload check could not tell counts as the queue's mean.
    task_store.update(conn, new_task(conn, settings, queue, 11), audio_duration=None)
    assert job_queue.refresh_backlog(conn, queue) == {"jobs": 11, "audio_seconds": 165.0}
    # Only the most recent jobs count.
    for _ in range(stats.JOB_SECONDS_KEPT):
        stats.record_job(conn, 0.5, 10.0)
    assert stats.recent_throughput(conn) == (0.5, 0.05)
