"""The RQ side: enqueueing tasks by dotted path, positions, queue figures, wait estimates.

Jobs are enqueued as the string `JOB_FUNC`, so the API process never imports the job module (nor
the engine behind it). The RQ job id is the task id.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from typing import Any, ClassVar, cast

import redis
from redis.client import Pipeline
from rq import Queue, Worker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Callback, Job
from rq.registry import FailedJobRegistry, StartedJobRegistry
from rq.serializers import Serializer
from rq.timeouts import BaseDeathPenalty

from src.config import Settings
from src.records.redis_client import (
    BACKLOG_KEY,
    CLAIMERS_KEY,
    IN_HAND_KEY,
    READY_WORKERS_KEY,
    claimed_key,
    decoded,
    publish_beacon,
    task_key,
    withdraw_beacon,
    worker_key,
)
from src.results import stats

JOB_FUNC = "src.worker.jobs.process_task"
FAILURE_CALLBACK = "src.worker.jobs.on_failure"
# Paths earlier releases stored in queued jobs; `migrate_legacy_jobs` points them at today's.
LEGACY_PATHS = {
    "src.api.tasks.transcribe": JOB_FUNC,
    "src.asr.jobs.transcribe": JOB_FUNC,
    "src.api.tasks.on_failure": FAILURE_CALLBACK,
    "src.asr.jobs.on_failure": FAILURE_CALLBACK,
}
# Queued jobs wake a waiting worker through `<queue key>:wake`; at most this many tokens are kept.
WAKE_TOKENS_KEPT = 64
# Tokens only hurry a waiting worker: older ones are worth nothing, and none outlive this.
WAKE_TOKENS_TTL_S = 60
# A waiting worker looks at its queues at least this often, whatever the tokens say.
WAKE_WAIT_S = 1.0
# Until the service has timed real jobs, assume this many seconds per job (documented in README).
DEFAULT_JOB_SECONDS = 10.0


class ServiceQueue(Queue):
    """An RQ queue whose workers never hold a job that no Redis list names.

    RQ's BLPOP (several queues) takes a job off its queue and RQ records it in the started
    registry only a few calls later; a worker killed in between lost the job for good, and RQ's
    BLMOVE (one queue) parks it in an intermediate list that RQ fails after a minute. Here a
    worker takes a job and records itself as its holder in one Lua call (`IN_HAND_KEY`), and
    its prepare_execution deletes that entry in the transaction that starts the job; the
    abandoned-job sweep requeues entries whose holder died (src/queue/recovery.py).

    Since a script cannot block, a waiting worker blocks on its queues' wake lists, which every
    push feeds, and looks again at least every WAKE_WAIT_S.
    """

    # The taking worker process's identity (Owner JSON), set by its own subclass (`held_by`).
    holder: ClassVar[str] = "{}"

    @classmethod
    def held_by(cls, holder: str) -> type[ServiceQueue]:
        """This class as one worker process uses it: jobs it takes are recorded under `holder`."""
        return type(cls.__name__, (cls,), {"holder": holder})

    @staticmethod
    def wake_key(queue_key: str) -> str:
        return f"{queue_key}:wake"

    def push_job_id(
        self, job_id: str, pipeline: Pipeline | None = None, at_front: bool = False
    ) -> None:
        super().push_job_id(job_id, pipeline=pipeline, at_front=at_front)
        target = pipeline if pipeline is not None else self.connection.pipeline()
        target.lpush(self.wake_key(self.key), 1)
        target.ltrim(self.wake_key(self.key), 0, WAKE_TOKENS_KEPT - 1)
        target.expire(self.wake_key(self.key), WAKE_TOKENS_TTL_S)
        if pipeline is None:
            target.execute()

    @classmethod
    def dequeue_any(
        cls,
        queues: Iterable[Queue],
        timeout: int | None,
        connection: redis.Redis,
        job_class: type[Job] | None = None,
        serializer: Serializer | str | None = None,
        death_penalty_class: type[BaseDeathPenalty] | None = None,
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue_any (first non-empty queue wins), taking each job with `_TAKE`."""
        ordered = list(queues)
        keys = [q.key for q in ordered]
        deadline = None if timeout is None else time.monotonic() + timeout
        job_cls = job_class or Job
        while True:
            taken = connection.eval(
                _TAKE, len(keys) + 1, *keys, IN_HAND_KEY, cls.holder, f"{time.time():.3f}"
            )
            if taken:
                queue_key, job_id = (decoded(raw) for raw in taken)
                queue = ordered[keys.index(queue_key)]
                try:
                    job = job_cls.fetch(job_id, connection=connection, serializer=serializer)
                except NoSuchJobError:  # deleted while queued: RQ skips these too
                    connection.hdel(IN_HAND_KEY, job_id)
                    continue
                return job, queue
            if deadline is None:
                return None
            left = deadline - time.monotonic()
            if left <= 0:
                raise DequeueTimeout(timeout, keys)
            connection.blpop([cls.wake_key(k) for k in keys], min(left, WAKE_WAIT_S))


def held_jobs(conn: redis.Redis) -> dict[str, dict[str, Any]]:
    """Jobs taken off a queue and not started yet: job id -> holder (Owner fields), `queue`
    (its key) and `at` (epoch seconds)."""
    return {decoded(k): json.loads(v) for k, v in conn.hgetall(IN_HAND_KEY).items()}


def release(conn: redis.Redis, job_id: str) -> bool:
    """Drop a held job's entry; True for the one caller that removed it (sweepers race)."""
    return bool(conn.hdel(IN_HAND_KEY, job_id))


def started(pipe: Pipeline, job_id: str) -> None:
    """In the transaction that puts the job in the started registry: it is no longer held."""
    pipe.hdel(IN_HAND_KEY, job_id)


def get_queue(conn: redis.Redis, settings: Settings) -> ServiceQueue:
    return ServiceQueue(
        settings.rq_queue_name, connection=conn, default_timeout=settings.rq_worker_timeout
    )


def queue_at(conn: redis.Redis, queue_key: str) -> ServiceQueue:
    """The queue whose Redis key is `queue_key` (a held job's record names its queue so)."""
    return cast(ServiceQueue, ServiceQueue.from_queue_key(queue_key, connection=conn))


def enqueue_task(
    queue: Queue, task_id: str, settings: Settings, pipeline: Pipeline | None = None
) -> Job:
    """Enqueue now, or as part of `pipeline`: a transaction (begun with `multi()`) that writes
    the task's record too, so that Redis, and its AOF after a crash, holds both or neither."""
    return queue.enqueue(
        JOB_FUNC,
        task_id,
        job_id=task_id,
        job_timeout=settings.rq_worker_timeout,
        result_ttl=settings.task_ttl_seconds,
        failure_ttl=max(settings.task_ttl_seconds, 86400),
        on_failure=Callback(FAILURE_CALLBACK),
        description=f"transcribe {task_id}",
        pipeline=pipeline,
    )


def migrate_legacy_jobs(queue: Queue) -> list[str]:
    """Point queued jobs of an earlier release at today's job functions, so that an upgrade with
    a non-empty queue loses nothing (RQ would fail them on an import error). Workers call it at
    start, after they requeued abandoned jobs."""
    moved = []
    for job in queue.get_jobs():
        new = LEGACY_PATHS.get(job.func_name or "")
        if new is None:
            continue
        job.func_name = new
        callback = job._failure_callback_name or ""  # RQ has no public setter
        job._failure_callback_name = LEGACY_PATHS.get(callback, callback) or None
        job.save(include_meta=False, include_result=False)
        moved.append(job.id)
    return moved


def position(queue: Queue, job_id: str) -> int | None:
    """1-based place in the queue (1 = next to be taken), None once a worker has it."""
    pos = queue.get_job_position(job_id)
    return None if pos is None else pos + 1


def publish_readiness(conn: redis.Redis, name: str, payload: str, ttl_s: int) -> None:
    """A worker's beacon (expires unless refreshed) and its name in the index readers use."""
    publish_beacon(conn, READY_WORKERS_KEY, name, worker_key(name), payload, ttl_s)


def withdraw_readiness(conn: redis.Redis, name: str) -> None:
    withdraw_beacon(conn, READY_WORKERS_KEY, name, worker_key(name))


def ready_workers(conn: redis.Redis) -> list[str]:
    """Names of workers whose readiness beacon (model loaded) has not expired."""
    # Without WITHSCORES the reply holds members only (redis-py's type also allows pairs).
    members = cast("list[bytes | str]", conn.zrange(READY_WORKERS_KEY, 0, -1))
    names = [decoded(raw) for raw in members]
    beacons = conn.mget([worker_key(name) for name in names]) if names else []
    return [name for name, beacon in zip(names, beacons, strict=True) if beacon]


def estimated_wait(
    conn: redis.Redis, position: int, workers: int, audio_seconds: float | None
) -> int:
    """Seconds until the job at `position` (1 = next) has finished, from observed throughput.

    Work ahead is measured in audio, not in jobs: a 2-hour recording and a voice note are both
    "one job", and a mean per job taken over a history with long recordings made the estimate
    4-5 times too high for a queue of voice notes. The jobs ahead are taken to hold the
    queue's mean audio per job (the workers' sweep keeps that figure), and a second of audio
    costs what recent jobs cost per second of audio, batched passes shared among their jobs.
    """
    ahead = max(position - 1, 0)
    seen = stats.recent_throughput(conn)
    if seen is None:
        return math.ceil((ahead + 1) * DEFAULT_JOB_SECONDS / max(workers, 1))
    per_job, per_audio_second = seen
    raw = conn.get(BACKLOG_KEY)
    backlog = json.loads(raw) if raw else {}
    queued_jobs = int(backlog.get("jobs", 0))
    # Until the sweep has counted the queue (every 5 s), the jobs ahead are taken to be like
    # this one: a burst of voice notes is mostly voice notes.
    mean_audio = (
        float(backlog.get("audio_seconds", 0.0)) / queued_jobs if queued_jobs else audio_seconds
    )
    if mean_audio is not None and per_audio_second > 0:
        work = ahead * mean_audio * per_audio_second
    else:
        work = ahead * per_job
    if audio_seconds is not None and per_audio_second > 0:
        work += audio_seconds * per_audio_second
    else:
        work += per_job
    return max(1, math.ceil(work / max(workers, 1)))


def refresh_backlog(conn: redis.Redis, queue: Queue) -> dict[str, float]:
    """Count the audio waiting in the queue, for the wait estimate; one sweeper at a time runs
    it every few seconds, so a submit never reads the whole queue."""
    ids = [decoded(raw) for raw in conn.lrange(queue.key, 0, -1)]
    raws = conn.mget([task_key(i) for i in ids]) if ids else []
    known = [json.loads(raw).get("audio_duration") for raw in raws if raw]
    durations = [float(d) for d in known if d is not None]
    audio = sum(durations)
    if durations:  # a file whose length the upload check could not tell: count it as the mean
        audio += (len(ids) - len(durations)) * audio / len(durations)
    figures = {"jobs": len(ids), "audio_seconds": round(audio, 3)}
    conn.set(BACKLOG_KEY, json.dumps(figures))
    return figures


def queue_status(conn: redis.Redis, queue: Queue) -> dict[str, int]:
    workers = Worker.all(queue=queue)
    busy = sum(1 for w in workers if w.state == "busy")
    return {
        "queued": queue.count,
        "processing": StartedJobRegistry(queue=queue).count,
        "failed": FailedJobRegistry(queue=queue).count,
        "workers": len(workers),
        "workers_busy": busy,
    }


# Take the first job of the first non-empty queue and record who holds it, in one step.
# KEYS: the queues in order, then IN_HAND_KEY; ARGV: the holder (Owner JSON), the time.
_TAKE = """
for i = 1, #KEYS - 1 do
  local id = redis.call('LPOP', KEYS[i])
  if id then
    local held = cjson.decode(ARGV[1])
    held['queue'] = KEYS[i]
    held['at'] = tonumber(ARGV[2])
    redis.call('HSET', KEYS[#KEYS], id, cjson.encode(held))
    return {KEYS[i], id}
  end
end
return false
"""


# Move each candidate that is still queued onto the worker's claim list, atomically per job, so
# two workers never claim the same job and a claimed job is always in one of the two lists.
_CLAIM = """
local claimed = {}
for i = 1, #ARGV - 1 do
  local id = ARGV[i]
  if redis.call('LREM', KEYS[1], 1, id) == 1 then
    redis.call('RPUSH', KEYS[2], id)
    redis.call('SADD', KEYS[3], ARGV[#ARGV])
    table.insert(claimed, id)
  end
end
return claimed
"""


def peek(queue: Queue, count: int) -> list[str]:
    """The ids of the next `count` queued jobs, without taking them."""
    return [decoded(raw) for raw in queue.connection.lrange(queue.key, 0, count - 1)]


def claim(conn: redis.Redis, queue: Queue, worker: str, job_ids: list[str]) -> list[str]:
    """Take these queued jobs off the queue for `worker` (a batch); returns those it got."""
    if not job_ids:
        return []
    got = conn.eval(_CLAIM, 3, queue.key, claimed_key(worker), CLAIMERS_KEY, *job_ids, worker)
    return [raw.decode() if isinstance(raw, bytes) else str(raw) for raw in got]


def claimed(conn: redis.Redis, worker: str) -> list[str]:
    """Jobs `worker` claimed for a batch and has not started yet, oldest first."""
    return [decoded(raw) for raw in conn.lrange(claimed_key(worker), 0, -1)]


def unclaim(conn: redis.Redis, worker: str, job_id: str) -> bool:
    return bool(conn.lrem(claimed_key(worker), 1, job_id))


def claimers(conn: redis.Redis) -> list[str]:
    """Workers that have claimed batch jobs (some may have finished them since)."""
    return sorted(decoded(raw) for raw in conn.smembers(CLAIMERS_KEY))


def return_claimed(conn: redis.Redis, queue: Queue, worker: str) -> list[str]:
    """Put a stopped worker's claimed-but-unstarted jobs back at the front of the queue.

    A job that already reached the started registry is left to the abandoned-job sweep, and
    one already back in the queue is not pushed twice; LREM on the claim list decides who
    returns a job when two sweepers race.
    """
    returned: list[str] = []
    started = StartedJobRegistry(queue=queue)
    for job_id in reversed(claimed(conn, worker)):  # reversed: LPUSH keeps their order
        if not unclaim(conn, worker, job_id):
            continue
        if job_id in started or conn.lpos(queue.key, job_id) is not None:
            continue
        if not conn.exists(Job.key_for(job_id)):
            continue  # deleted while claimed
        queue.push_job_id(job_id, at_front=True)
        returned.append(job_id)
    if not conn.exists(claimed_key(worker)):
        conn.srem(CLAIMERS_KEY, worker)
    return list(reversed(returned))
