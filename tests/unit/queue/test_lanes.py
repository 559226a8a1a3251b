"""Priority lanes against a real Redis and RQ: the lane a clip's duration picks, the order a worker
takes them in, a job's place across the lanes, the wait estimate per lane, and promotion.

The end-to-end version (real workers busy on long recordings, a voice note submitted last finishing
first) is tests/system/test_lanes_service.py."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta
from pathlib import Path

import redis
from rq.job import Job
from rq.utils import now, utcformat

from src.config import Settings
from src.queue import job_queue
from src.queue.job_queue import Lanes, get_lanes
from src.records import task_store
from src.records.events import EVENTS_CHANNEL
from src.records.redis_client import BACKLOG_KEY
from src.results import stats
from src.vocabulary import Priority
from src.worker.process import ASRWorker
from tests.support.fixtures import make_settings
from tests.support.records import new_task


def in_lane(conn: redis.Redis, settings: Settings, lane: Priority, n: int) -> str:
    """A queued task whose job waits in `lane`."""
    task_id = new_task(conn, settings, get_lanes(conn, settings)[Priority.NORMAL], n)
    if lane != Priority.NORMAL:
        lanes = get_lanes(conn, settings)
        conn.lrem(lanes[Priority.NORMAL].key, 1, task_id)
        Job.fetch(task_id, connection=conn).delete(remove_from_queue=False)
        job_queue.enqueue_task(lanes[lane], task_id, settings)
        task_store.update(conn, task_id, priority=lane)  # as submit records it
    return task_id


def waited(conn: redis.Redis, task_id: str, seconds: float) -> None:
    """Backdate the job's enqueue time, as if it had waited `seconds`."""
    stamp = utcformat(now() - timedelta(seconds=seconds))
    conn.hset(Job.key_for(task_id), "enqueued_at", stamp)


def test_the_default_lane_follows_the_duration(storage: Path):
    settings = make_settings(1, storage, lane_high_max_seconds=60, lane_low_min_seconds=600)
    lanes = [job_queue.lane_for(settings, s) for s in (0.5, 59.9, 60, 599.9, 600, 7200, None)]
    h, n, lo = Priority.HIGH, Priority.NORMAL, Priority.LOW
    assert lanes == [h, h, n, n, lo, lo, n]  # unknown length: normal


def test_each_lane_is_an_rq_queue_named_after_the_configured_one(conn: redis.Redis, storage: Path):
    settings = make_settings(1, storage, rq_queue_name="asr-x")
    lanes = get_lanes(conn, settings)
    assert [q.name for q in lanes.ordered()] == ["asr-x-high", "asr-x", "asr-x-low"]
    assert job_queue.get_queue(conn, settings).name == "asr-x"  # the normal lane, as before
    assert lanes.named("asr-x-low") is lanes[Priority.LOW]
    assert lanes.named("gone") is lanes[Priority.NORMAL]


def test_a_worker_takes_the_highest_non_empty_lane_first(conn: redis.Redis, settings: Settings):
    low = in_lane(conn, settings, Priority.LOW, 1)
    normal = in_lane(conn, settings, Priority.NORMAL, 2)
    high = [in_lane(conn, settings, Priority.HIGH, n) for n in (3, 4)]
    worker = ASRWorker(get_lanes(conn, settings).ordered(), connection=conn, name="w")
    taken = []
    for _ in range(4):
        got = worker.dequeue_job_and_maintain_ttl(timeout=1)
        assert got is not None
        worker.prepare_execution(got[0])
        taken.append(got[0].id)
    assert taken == [*high, normal, low]


def place(conn: redis.Redis, lanes: Lanes, job_id: str) -> job_queue.Place | None:
    return job_queue.outlook(conn, lanes, job_id).place


def test_a_place_counts_the_higher_lanes_as_ahead(conn: redis.Redis, settings: Settings):
    lanes = get_lanes(conn, settings)
    highs = [in_lane(conn, settings, Priority.HIGH, n) for n in (1, 2)]
    normal = in_lane(conn, settings, Priority.NORMAL, 3)
    lows = [in_lane(conn, settings, Priority.LOW, n) for n in (4, 5)]
    where = place(conn, lanes, lows[1])
    assert where is not None and where.lane == Priority.LOW
    assert where.ahead == {Priority.HIGH: 2, Priority.NORMAL: 1, Priority.LOW: 1}
    assert where.position == 5
    assert place(conn, lanes, highs[1]) == job_queue.Place(Priority.HIGH, {Priority.HIGH: 1})
    assert place(conn, lanes, normal) == job_queue.Place(
        Priority.NORMAL, {Priority.HIGH: 2, Priority.NORMAL: 0}
    )
    assert place(conn, lanes, "not-queued") is None


def test_a_voice_notes_wait_counts_only_the_voice_notes_ahead(
    conn: redis.Redis, settings: Settings
):
    stats.record_job(conn, 2.0, 20.0)  # 0.1 s per second of audio
    lanes = get_lanes(conn, settings)
    for n in (1, 2):
        task_store.update(conn, in_lane(conn, settings, Priority.LOW, n), audio_duration=3600.0)
    for n in (3, 4):
        task_store.update(conn, in_lane(conn, settings, Priority.HIGH, n), audio_duration=10.0)
    job_queue.refresh_backlog(conn, lanes)
    backlog = json.loads(conn.get(BACKLOG_KEY))  # type: ignore[arg-type]
    assert backlog["low"] == {"jobs": 2, "audio_seconds": 7200.0}
    assert backlog["high"] == {"jobs": 2, "audio_seconds": 20.0}
    note = in_lane(conn, settings, Priority.HIGH, 5)
    where = place(conn, lanes, note)
    assert where is not None
    # 2 notes x 10 s + its own 10 s = 30 s of audio x 0.1 s: the hours in the low lane wait.
    assert job_queue.estimated_wait(conn, where.ahead, 1, 10.0) == 3
    last = in_lane(conn, settings, Priority.LOW, 6)
    where = place(conn, lanes, last)
    assert where is not None
    # Behind everything: 3 notes (30 s) + 2 hours + its own hour, x 0.1 s.
    assert job_queue.estimated_wait(conn, where.ahead, 1, 3600.0) == 1083


def test_a_job_moves_up_a_lane_for_each_promotion_wait(conn: redis.Redis, settings: Settings):
    lanes: Lanes = get_lanes(conn, settings)
    fresh_low = in_lane(conn, settings, Priority.LOW, 1)
    old_low = in_lane(conn, settings, Priority.LOW, 2)
    oldest_low = in_lane(conn, settings, Priority.LOW, 3)
    old_normal = in_lane(conn, settings, Priority.NORMAL, 4)
    high = in_lane(conn, settings, Priority.HIGH, 5)
    waited(conn, old_low, 301)
    waited(conn, oldest_low, 601)
    waited(conn, old_normal, 301)
    pubsub = conn.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(EVENTS_CHANNEL)
    moved = job_queue.promote(conn, lanes, 300)
    assert sorted(moved) == sorted(
        [(old_normal, Priority.HIGH), (old_low, Priority.NORMAL), (oldest_low, Priority.HIGH)]
    )
    assert lanes[Priority.HIGH].get_job_ids() == [high, old_normal, oldest_low]
    assert lanes[Priority.NORMAL].get_job_ids() == [old_low]
    assert lanes[Priority.LOW].get_job_ids() == [fresh_low]
    # RQ's origin follows the job: a delete or a requeue finds it in its new lane.
    assert Job.fetch(oldest_low, connection=conn).origin == lanes[Priority.HIGH].name
    Job.fetch(oldest_low, connection=conn).delete()
    assert lanes[Priority.HIGH].get_job_ids() == [high, old_normal]
    # Push watchers hear that places changed.
    heard: list[str] = []
    deadline = time.monotonic() + 5
    while len(heard) < 3 and time.monotonic() < deadline:
        if (message := pubsub.get_message(timeout=0.2)) is not None:
            heard.append(json.loads(message["data"])["task_id"])
    assert sorted(heard) == sorted([old_normal, old_low, oldest_low])
    assert job_queue.promote(conn, lanes, 300) == []  # nothing more to move yet


def test_a_waiting_worker_is_woken_by_a_promotion(conn: redis.Redis, settings: Settings):
    """Promotion pushes a wake token onto the target lane, like any push."""
    lanes = get_lanes(conn, settings)
    low = in_lane(conn, settings, Priority.LOW, 1)
    waited(conn, low, 700)
    conn.delete(job_queue.ServiceQueue.wake_key(lanes[Priority.LOW].key))
    worker = threading.Thread(target=job_queue.promote, args=(conn, lanes, 300))
    worker.start()
    worker.join()
    assert conn.llen(job_queue.ServiceQueue.wake_key(lanes[Priority.HIGH].key)) == 1
