"""The RQ side: enqueueing tasks by dotted path, positions, queue figures, wait estimates.

Jobs are enqueued as the string `JOB_FUNC`, so the API process never imports the job module (nor
the engine behind it). The RQ job id is the task id.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any, ClassVar, cast

import redis
from redis.client import Pipeline
from rq import Queue, Retry, Worker
from rq.exceptions import DequeueTimeout, NoSuchJobError
from rq.job import Callback, Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry
from rq.serializers import Serializer
from rq.timeouts import BaseDeathPenalty
from rq.utils import utcparse

from src.config import Settings
from src.records import events
from src.records.events import TaskEvent
from src.records.redis_client import (
    BACKLOG_KEY,
    CLAIMERS_KEY,
    IN_HAND_KEY,
    READY_WORKERS_KEY,
    Script,
    claimed_key,
    decoded,
    publish_beacon,
    run_batch,
    task_key,
    withdraw_beacon,
    worker_key,
)
from src.results import stats
from src.vocabulary import Priority, TaskStatus

JOB_FUNC = "src.worker.jobs.process_task"
FAILURE_CALLBACK = "src.worker.jobs.on_failure"
# The completion webhook's delivery (src/worker/jobs.py), on a queue of its own that workers
# take after the transcription queue: a delivery never delays a transcription.
CALLBACK_FUNC = "src.worker.jobs.deliver_callback"
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
    """The normal lane: the queue named RQ_QUEUE_NAME, as before lanes existed."""
    return get_lanes(conn, settings)[Priority.NORMAL]


@dataclass(frozen=True)
class Lanes:
    """The priority lanes, one RQ queue each (`rq info` lists them), highest first."""

    queues: dict[Priority, ServiceQueue]

    def __getitem__(self, priority: Priority) -> ServiceQueue:
        return self.queues[priority]

    def ordered(self) -> list[ServiceQueue]:
        return [self.queues[p] for p in Priority]

    def named(self, name: str) -> ServiceQueue:
        """The lane whose RQ queue is `name` (a job's `origin`); the normal lane if none is."""
        found = [q for q in self.queues.values() if q.name == name]
        return found[0] if found else self.queues[Priority.NORMAL]


def lane_name(settings: Settings, priority: Priority) -> str:
    base = settings.rq_queue_name
    return base if priority == Priority.NORMAL else f"{base}-{priority.value}"


def get_lanes(conn: redis.Redis, settings: Settings) -> Lanes:
    return Lanes(
        {
            p: ServiceQueue(
                lane_name(settings, p), connection=conn, default_timeout=settings.rq_worker_timeout
            )
            for p in Priority
        }
    )


def lane_for(settings: Settings, audio_seconds: float | None) -> Priority:
    """The default lane by duration: voice notes first, long recordings last."""
    if audio_seconds is None:
        return Priority.NORMAL
    if audio_seconds < settings.lane_high_max_seconds:
        return Priority.HIGH
    if audio_seconds >= settings.lane_low_min_seconds:
        return Priority.LOW
    return Priority.NORMAL


@dataclass(frozen=True)
class Place:
    """Where a queued job waits: its lane and the jobs ahead of it in each lane."""

    lane: Priority
    ahead: dict[Priority, int]

    @property
    def position(self) -> int:
        """1-based across the lanes: 1 = the next job any worker takes."""
        return sum(self.ahead.values()) + 1


def _place_from(replies: list[Any]) -> Place | None:
    """The place from each lane's LPOS and LLEN, highest lane first; None once a worker has it."""
    ahead: dict[Priority, int] = {}
    for priority, index, length in zip(Priority, replies[0::2], replies[1::2], strict=True):
        if index is not None:
            ahead[priority] = int(index)
            return Place(lane=priority, ahead=ahead)
        ahead[priority] = int(length)
    return None


@dataclass(frozen=True)
class Outlook:
    """A job's place and what its wait estimate needs, read in one round trip (`read_outlook`);
    a submit's answer used to read them in five."""

    place: Place | None
    workers: int
    throughput: tuple[float, float] | None
    backlog: dict[str, dict[str, float]]

    def wait(self, audio_seconds: float | None) -> int:
        """`estimated_wait` for this job, `audio_seconds` long."""
        ahead = self.place.ahead if self.place else {}
        return wait_estimate(ahead, self.workers, audio_seconds, self.throughput, self.backlog)


def read_outlook(pipe: Pipeline, lanes: Lanes, job_id: str) -> None:
    """The reads of `outlook` added to a pipeline run by `run_batch`; `outlook_from` takes
    their OUTLOOK_REPLIES replies. The job is looked for in every lane, since promotion moves
    jobs up."""
    for queue in lanes.ordered():
        pipe.lpos(queue.key, job_id)
        pipe.llen(queue.key)
    _READY.queue(pipe, [READY_WORKERS_KEY], [worker_key("")])
    stats.read_throughput(pipe)
    pipe.get(BACKLOG_KEY)


OUTLOOK_REPLIES = 2 * len(Priority) + 3


def outlook_from(conn: redis.Redis, replies: list[Any]) -> Outlook:
    """The outlook from the replies of `read_outlook` (`conn` runs a script Redis forgot)."""
    if len(replies) != OUTLOOK_REPLIES:
        raise ValueError(f"an outlook is {OUTLOOK_REPLIES} replies, not {len(replies)}")
    *places, ready, timed, backlog = replies
    names = _READY.settle(conn, ready, [READY_WORKERS_KEY], [worker_key("")])
    return Outlook(
        place=_place_from(places),
        workers=len(names),
        throughput=stats.throughput(timed),
        backlog=json.loads(backlog) if backlog else {},
    )


def outlook(conn: redis.Redis, lanes: Lanes, job_id: str) -> Outlook:
    """The job's place (None once a worker has it), the ready workers, recent throughput and
    the lanes' backlog, in one round trip."""
    with conn.pipeline(transaction=False) as pipe:
        read_outlook(pipe, lanes, job_id)
        return outlook_from(conn, run_batch(pipe))


# Move a job that waited long enough up to another lane, its RQ origin with it, and wake a worker.
# KEYS: from, to, the job's hash, the target's wake list; ARGV: job id, target queue name.
_PROMOTE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('HSET', KEYS[3], 'origin', ARGV[2])
  redis.call('LPUSH', KEYS[4], 1)
  redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[3]) - 1)
  return 1
end
return 0
"""
# Promotion looks at this many jobs from the head of each lane per sweep.
PROMOTE_SCAN = 100


def promote(conn: redis.Redis, lanes: Lanes, after_s: float) -> list[tuple[str, Priority]]:
    """Move up each job that has waited `after_s` per lane it climbs from the lane it was
    submitted to: a low job is normal after `after_s` and high after twice that, a normal job
    high after `after_s`. The workers' sweep runs it every few seconds, so no job waits behind
    newer jobs of higher lanes forever."""
    now = time.time()
    order = list(Priority)
    moved: list[tuple[str, Priority]] = []
    for source in (Priority.NORMAL, Priority.LOW):
        queue = lanes[source]
        ids = [decoded(raw) for raw in conn.lrange(queue.key, 0, PROMOTE_SCAN - 1)]
        if not ids:
            continue
        with conn.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(Job.key_for(job_id), "enqueued_at")
            pipe.mget([task_key(job_id) for job_id in ids])
            *stamps, records = pipe.execute()
        for job_id, stamp, raw in zip(ids, stamps, records, strict=True):
            if not stamp:
                continue
            submitted = Priority(json.loads(raw).get("priority", source.value)) if raw else source
            waited = now - utcparse(decoded(stamp)).replace(tzinfo=UTC).timestamp()
            rank = order.index(submitted) - int(waited // after_s)
            target = order[max(rank, 0)]
            if order.index(target) >= order.index(source):
                continue
            dest = lanes[target]
            args = (job_id, dest.name, WAKE_TOKENS_KEPT)
            keys = (queue.key, dest.key, Job.key_for(job_id), ServiceQueue.wake_key(dest.key))
            if conn.eval(_PROMOTE, 4, *keys, *args):
                moved.append((job_id, target))
                # Its place in line changed, and so did others': push watchers read again.
                change = TaskEvent(task_id=job_id, change="status", status=TaskStatus.QUEUED)
                events.publish(conn, change)
    return moved


def queue_at(conn: redis.Redis, queue_key: str) -> ServiceQueue:
    """The queue whose Redis key is `queue_key` (a held job's record names its queue so)."""
    return cast(ServiceQueue, ServiceQueue.from_queue_key(queue_key, connection=conn))


def callback_queue(conn: redis.Redis, settings: Settings) -> ServiceQueue:
    """The deliveries' queue, `<RQ_QUEUE_NAME>:callbacks`; workers take it after the main one.

    A ServiceQueue like the main one, so a delivery's push wakes a waiting worker and a worker
    killed between taking a delivery and starting it leaves a trace the sweep requeues."""
    return ServiceQueue(f"{settings.rq_queue_name}:callbacks", connection=conn, default_timeout=60)


def worker_queues(conn: redis.Redis, settings: Settings) -> list[ServiceQueue]:
    """The queues a worker listens on, by priority: its dequeue takes the first non-empty one,
    so the lanes go high to low and deliveries wait for every transcription. The abandoned-job
    sweep walks each of them."""
    return [*get_lanes(conn, settings).ordered(), callback_queue(conn, settings)]


def enqueue_callback(
    conn: redis.Redis, settings: Settings, task_id: str, pipeline: Pipeline | None = None
) -> Job:
    """Deliver a finished task's result to its callback_url, with RQ's bounded retries after
    CALLBACK_RETRY_INTERVALS. A retry waits in RQ's scheduled registry; the workers' sweep
    (`release_due_callbacks`) puts it back on the queue when due, as RQ's scheduler would."""
    intervals = settings.callback_retry_intervals
    return callback_queue(conn, settings).enqueue(
        CALLBACK_FUNC,
        task_id,
        job_id=f"{task_id}_cb_{secrets.token_hex(4)}",
        job_timeout=int(settings.callback_timeout_seconds) + 30,
        result_ttl=settings.task_ttl_seconds,
        failure_ttl=settings.task_ttl_seconds,
        retry=Retry(max=len(intervals), interval=list(intervals)) if intervals else None,
        description=f"callback {task_id}",
        pipeline=pipeline,
    )


def release_due_callbacks(conn: redis.Redis, settings: Settings) -> list[str]:
    """Requeue the delivery retries whose back-off has passed. The workers run without RQ's
    scheduler process (it would fork the model-laden worker), so their sweep does its one job."""
    queue = callback_queue(conn, settings)
    registry = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    due = registry.get_jobs_to_schedule()
    if not due:
        return []
    released = []
    with conn.pipeline() as pipe:  # back on the queue and out of the registry together
        for job in Job.fetch_many(due, connection=conn):
            if job is not None:
                queue.enqueue_job(job, pipeline=pipe)
                released.append(job.id)
        for job_id in due:
            registry.remove(job_id, pipeline=pipe)
        pipe.execute()
    return released


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
    """1-based place in one queue (1 = next to be taken), None once a worker has it."""
    pos = queue.get_job_position(job_id)
    return None if pos is None else pos + 1


def publish_readiness(conn: redis.Redis, name: str, payload: str, ttl_s: int) -> None:
    """A worker's beacon (expires unless refreshed) and its name in the index readers use."""
    publish_beacon(conn, READY_WORKERS_KEY, name, worker_key(name), payload, ttl_s)


def withdraw_readiness(conn: redis.Redis, name: str) -> None:
    withdraw_beacon(conn, READY_WORKERS_KEY, name, worker_key(name))


# The workers in the index whose beacon is still there (not expired), in one step.
# KEYS: the index; ARGV: the beacon key prefix.
_READY = Script(
    """
local ready = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if redis.call('STRLEN', ARGV[1] .. name) > 0 then table.insert(ready, name) end
end
return ready
"""
)


def ready_workers(conn: redis.Redis) -> list[str]:
    """Names of workers whose readiness beacon (model loaded) has not expired: one round trip,
    not a read of the index and then one of the beacons."""
    return [decoded(raw) for raw in _READY(conn, [READY_WORKERS_KEY], [worker_key("")])]


def estimated_wait(
    conn: redis.Redis, ahead: Mapping[Priority, int], workers: int, audio_seconds: float | None
) -> int:
    """Seconds until a job with `ahead` jobs before it (per lane) has finished, from observed
    throughput.

    Work ahead is measured in audio, not in jobs: a 2-hour recording and a voice note are both
    "one job", and a mean per job taken over a history with long recordings made the estimate
    4-5 times too high for a queue of voice notes. The jobs ahead in a lane are taken to hold
    that lane's mean audio per job (the workers' sweep keeps that figure), and a second of audio
    costs what recent jobs cost per second of audio, batched passes shared among their jobs.
    """
    seen = stats.recent_throughput(conn)
    raw = conn.get(BACKLOG_KEY) if seen is not None else None
    backlog = json.loads(raw) if raw else {}
    return wait_estimate(ahead, workers, audio_seconds, seen, backlog)


def wait_estimate(
    ahead: Mapping[Priority, int],
    workers: int,
    audio_seconds: float | None,
    seen: tuple[float, float] | None,
    backlog: Mapping[str, Mapping[str, float]],
) -> int:
    """`estimated_wait` from figures already read: recent throughput and the lanes' backlog."""
    jobs_ahead = sum(ahead.values())
    if seen is None:
        return math.ceil((jobs_ahead + 1) * DEFAULT_JOB_SECONDS / max(workers, 1))
    per_job, per_audio_second = seen
    work = 0.0
    for lane, count in ahead.items():
        figures = backlog.get(lane.value, {})
        queued_jobs = int(figures.get("jobs", 0))
        # Until the sweep has counted the lane (every 5 s), the jobs ahead are taken to be like
        # this one: a burst of voice notes is mostly voice notes.
        mean_audio = (
            float(figures.get("audio_seconds", 0.0)) / queued_jobs if queued_jobs else audio_seconds
        )
        if mean_audio is not None and per_audio_second > 0:
            work += count * mean_audio * per_audio_second
        else:
            work += count * per_job
    if audio_seconds is not None and per_audio_second > 0:
        work += audio_seconds * per_audio_second
    else:
        work += per_job
    return max(1, math.ceil(work / max(workers, 1)))


def refresh_backlog(conn: redis.Redis, lanes: Lanes) -> dict[str, dict[str, float]]:
    """Count the audio waiting in each lane, for the wait estimate; one sweeper at a time runs
    it every few seconds, so a submit never reads a whole lane."""
    backlog: dict[str, dict[str, float]] = {}
    for priority, queue in lanes.queues.items():
        ids = [decoded(raw) for raw in conn.lrange(queue.key, 0, -1)]
        raws = conn.mget([task_key(i) for i in ids]) if ids else []
        known = [json.loads(raw).get("audio_duration") for raw in raws if raw]
        durations = [float(d) for d in known if d is not None]
        audio = sum(durations)
        if durations:  # a file whose length the upload check could not tell: count it as the mean
            audio += (len(ids) - len(durations)) * audio / len(durations)
        backlog[priority.value] = {"jobs": len(ids), "audio_seconds": round(audio, 3)}
    conn.set(BACKLOG_KEY, json.dumps(backlog))
    return backlog


def queue_status(conn: redis.Redis, lanes: Lanes) -> dict[str, Any]:
    """Totals over the lanes, and each lane's waiting jobs."""
    queues = lanes.ordered()
    workers = Worker.all(connection=conn)
    mine = {q.name for q in queues}
    workers = [w for w in workers if mine & set(w.queue_names())]
    busy = sum(1 for w in workers if w.state == "busy")
    return {
        "queued": sum(q.count for q in queues),
        "processing": sum(StartedJobRegistry(queue=q).count for q in queues),
        "failed": sum(FailedJobRegistry(queue=q).count for q in queues),
        "workers": len(workers),
        "workers_busy": busy,
        "lanes": {p.value: lanes[p].count for p in Priority},
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


def return_claimed(conn: redis.Redis, lanes: Lanes, worker: str) -> list[str]:
    """Put a stopped worker's claimed-but-unstarted jobs back at the front of their lane.

    A job that already reached the started registry is left to the abandoned-job sweep, and
    one already back in the queue is not pushed twice; LREM on the claim list decides who
    returns a job when two sweepers race.
    """
    returned: list[str] = []
    for job_id in reversed(claimed(conn, worker)):  # reversed: LPUSH keeps their order
        if not unclaim(conn, worker, job_id):
            continue
        origin = conn.hget(Job.key_for(job_id), "origin")
        if origin is None:
            continue  # deleted while claimed
        queue = lanes.named(decoded(origin))
        if job_id in StartedJobRegistry(queue=queue) or conn.lpos(queue.key, job_id) is not None:
            continue
        queue.push_job_id(job_id, at_front=True)
        returned.append(job_id)
    if not conn.exists(claimed_key(worker)):
        conn.srem(CLAIMERS_KEY, worker)
    return list(reversed(returned))
