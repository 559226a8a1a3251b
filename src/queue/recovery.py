"""Finding jobs whose worker died mid-run, and putting them back on the queue at once.

RQ notices an abandoned job only when its StartedJobRegistry entry expires (the job timeout plus a
minute) and then marks it failed. A killed worker should instead cost a re-run within seconds, so
every worker sweeps the registry every few seconds, and once when it starts.

Who owns a running job is decided by the process that started it, not by the worker's name: a
supervisor restarts `worker-1` under the same name within seconds, and the new process must not
inherit its predecessor's job. Each worker process has an incarnation id; when it starts a job it
records `{name, incarnation, pid, hostname}` for that RQ execution in the same transaction that
puts the job in the started registry. The job is abandoned when the name's beacon now carries
another incarnation, or, on this host, when the recorded pid is gone; on another host (a GPU box
of its own), when its beacon is gone: a pid there means nothing here, and RQ's registration of a
SIGKILLed worker outlives it by the job's timeout. The ZREM of the registry
entry decides which sweeper requeues it, so a job is never requeued twice.

A task whose worker died MAX_ABANDONS times is failed instead of requeued: it may be what kills
workers. Only deaths the job plausibly caused count: not one during a Redis outage or restart, and
not one when other workers died around the same time (a host or supervisor problem, or an
operator's kill of several workers).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import cast

import redis
from loguru import logger
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from src.config import Settings
from src.queue import job_queue
from src.queue.job_queue import Lanes
from src.records import task_store
from src.records.redis_client import (
    DEATHS_KEY,
    REDIS_OUTAGE_KEY,
    decoded,
    execution_owner_key,
    worker_key,
)
from src.records.task_store import CallbackAttempt, TaskRecord, utcnow
from src.results import history, metrics, stats
from src.results.metrics import FailureReason
from src.uploads import recordings
from src.vocabulary import Stage, TaskStatus

MAX_ABANDONS = 3
RQ_WORKER_PREFIX = "rq:worker:"
# Worker deaths this close together (seconds) are taken as one event, not any one job's fault.
CORRELATED_DEATHS_S = 60
# An owner that is alive but has run another job for this long lost this one's bookkeeping.
MOVED_ON_GRACE_S = 30
DEATHS_KEPT_S = 3600


def pid_alive(pid: int) -> bool:
    """True if the process exists and is not a zombie (killed, not yet reaped by its parent)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@dataclass(frozen=True)
class Owner:
    """One worker process: its name is reused by restarts, its incarnation never is."""

    name: str
    incarnation: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid: int = field(default_factory=os.getpid)
    hostname: str = field(default_factory=socket.gethostname)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Owner:
        data = json.loads(raw)
        return cls(
            name=str(data["name"]),
            incarnation=str(data["incarnation"]),
            pid=int(data["pid"]),
            hostname=str(data["hostname"]),
        )


def _beacon(conn: redis.Redis, name: str) -> dict[str, object] | None:
    raw = conn.get(worker_key(name))
    return json.loads(raw) if raw else None


def _rq_registration(conn: redis.Redis, name: str) -> dict[str, str] | None:
    fields = conn.hgetall(RQ_WORKER_PREFIX + name)
    if not fields:
        return None
    info = {decoded(k): decoded(v) for k, v in fields.items()}
    return None if "death" in info else info


def owner_alive(conn: redis.Redis, owner: Owner) -> bool:
    """Whether the very process that started a job still exists."""
    beacon = _beacon(conn, owner.name)
    if beacon is not None and beacon.get("incarnation") != owner.incarnation:
        return False  # the name belongs to a later process now
    if owner.hostname == socket.gethostname():
        return pid_alive(owner.pid)
    # Another host: the beacon, refreshed every few seconds with a short TTL even mid-job, is
    # the one sign of life; RQ's registration would keep a killed worker's job for ~11 minutes.
    return beacon is not None


def worker_alive(conn: redis.Redis, name: str) -> bool:
    """Whether some process of this name lives (for batch claims, which are kept by name)."""
    beacon = _beacon(conn, name)
    info: Mapping[str, object] | None = (
        beacon if beacon is not None else _rq_registration(conn, name)
    )
    if info is None:
        return False
    if info.get("hostname") == socket.gethostname():
        return pid_alive(int(str(info.get("pid") or 0)))
    return True


def load_owner(conn: redis.Redis, execution_id: str) -> Owner | None:
    raw = conn.get(execution_owner_key(execution_id))
    return Owner.from_json(raw) if raw else None


def note_redis_outage(conn: redis.Redis, at: float) -> None:
    """A worker saw Redis unreachable until `at`: deaths around then are not the job's fault."""
    conn.set(REDIS_OUTAGE_KEY, at)


def _moved_on(conn: redis.Redis, owner: Owner, job_id: str, started: datetime | None) -> bool:
    """The owner lives but runs something else: this job's end was lost (e.g. to a Redis
    restart that dropped its last writes). A short grace covers the start of a job."""
    if started is None or time.time() - started.timestamp() < MOVED_ON_GRACE_S:
        return False
    info = _rq_registration(conn, owner.name)
    return info is not None and info.get("current_job", "") != job_id


def _death(owner: Owner, job_id: str) -> str:
    return f"{owner.incarnation}|{job_id}"


def _innocent_reason(
    conn: redis.Redis, owner: Owner, job_id: str, started: datetime | None
) -> str | None:
    """Why this death is not the job's fault, or None when the job may have caused it.

    A job that kills every worker it meets leaves a trail of deaths all on itself; workers
    dying around the same time on other jobs point at something else."""
    now = time.time()
    # Without WITHSCORES the reply holds members only (redis-py's type also allows pairs).
    recent = cast(
        "list[bytes | str]", conn.zrangebyscore(DEATHS_KEY, now - CORRELATED_DEATHS_S, "+inf")
    )
    for raw in recent:
        incarnation, _, other_job = decoded(raw).partition("|")
        if incarnation != owner.incarnation and other_job != job_id:
            return "other workers died at the same time"
    since = started.timestamp() if started else now
    outage = conn.get(REDIS_OUTAGE_KEY)
    if outage is not None and float(outage) >= since:
        return "Redis was unreachable while it ran"
    uptime = int(conn.info("server").get("uptime_in_seconds", 0)) + 1  # whole seconds, floored
    if now - uptime > since:
        return "Redis restarted while it ran"
    return None


def requeue_abandoned(conn: redis.Redis, queue: Queue, settings: Settings) -> list[str]:
    """Requeue (or, after MAX_ABANDONS deaths it may have caused, fail) jobs whose worker died."""
    registry = StartedJobRegistry(queue=queue)
    abandoned: list[tuple[str, Job, Owner | None]] = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        entry = f"{job_id}:{execution_id}"
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            conn.zrem(registry.key, entry)
            continue
        owner = load_owner(conn, execution_id)
        if owner is None:  # started by a plain `rq worker`: judge by name
            if job.worker_name and worker_alive(conn, job.worker_name):
                continue
        elif owner_alive(conn, owner) and not _moved_on(conn, owner, job_id, job.started_at):
            continue
        abandoned.append((entry, job, owner))
    now = time.time()
    if any(owner for _, _, owner in abandoned):
        with conn.pipeline() as pipe:
            for _, job, owner in abandoned:
                if owner is not None:
                    pipe.zadd(DEATHS_KEY, {_death(owner, job.id): now}, nx=True)
            pipe.zremrangebyscore(DEATHS_KEY, "-inf", now - DEATHS_KEPT_S)
            pipe.execute()
    moved: list[str] = []
    for entry, job, owner in abandoned:
        if not conn.zrem(registry.key, entry):
            continue  # another sweeper took it
        if job.func_name == job_queue.CALLBACK_FUNC:
            _retry_delivery(conn, queue, settings, job, owner)
            moved.append(job.id)
        elif _requeue_one(conn, queue, settings, job, owner):
            moved.append(job.id)
    return moved + requeue_dropped(conn)


def requeue_everywhere(conn: redis.Redis, settings: Settings) -> list[str]:
    """`requeue_abandoned` on every queue a worker listens on (transcriptions, deliveries)."""
    moved: list[str] = []
    for queue in job_queue.worker_queues(conn, settings):
        moved += requeue_abandoned(conn, queue, settings)
    return moved


def _retry_delivery(
    conn: redis.Redis, queue: Queue, settings: Settings, job: Job, owner: Owner | None
) -> None:
    """A delivery whose worker died mid-POST counts as one failed attempt, on the task too: RQ's
    Retry sends it again after its back-off, and after CALLBACK_RETRY_INTERVALS it is failed.
    Bounded, so a delivery that kills workers cannot loop; the receiver may see the POST twice
    (it may have arrived before the death), as with any retry."""
    who = owner.name if owner else job.worker_name or "?"
    error = f"the worker {who} stopped during the delivery"
    task_store.add_callback_attempt(
        conn, str(job.args[0]), CallbackAttempt(at=utcnow(), error=error)
    )
    job.started_at = None
    with conn.pipeline() as pipe:
        if job.retries_left:
            job.retry(queue, pipe)
        else:
            job.set_status(JobStatus.FAILED, pipeline=pipe)
            FailedJobRegistry(queue=queue).add(
                job, ttl=settings.task_ttl_seconds, exc_string=error, pipeline=pipe
            )
        pipe.execute()
    left = job.retries_left or 0
    logger.warning(f"{job.description}: {error}; {left} retries left")


def _holder_gone(held: dict[str, object], conn: redis.Redis) -> bool:
    """Whether the worker that took this job off its queue will never start it: it died, or it
    lives but did not start it within the grace (a start takes milliseconds)."""
    if time.time() - float(str(held.get("at") or 0)) > MOVED_ON_GRACE_S:
        return True
    if "incarnation" not in held:  # taken by a process that did not say who it is
        return False
    return not owner_alive(conn, Owner.from_json(json.dumps(held)))


def requeue_dropped(conn: redis.Redis) -> list[str]:
    """Put back, at the front of their queue, jobs a worker took but died before starting.

    They never ran, so this counts no abandon (like a stopped worker's batch claims)."""
    returned: list[str] = []
    for job_id, held in job_queue.held_jobs(conn).items():
        if not _holder_gone(held, conn) or not job_queue.release(conn, job_id):
            continue
        if not conn.exists(Job.key_for(job_id)):
            continue  # deleted while it was held
        record = task_store.load(conn, job_id)
        if record is not None and record.status in (TaskStatus.DONE, TaskStatus.FAILED):
            continue
        job_queue.queue_at(conn, str(held["queue"])).push_job_id(job_id, at_front=True)
        task_store.update(conn, job_id, status=TaskStatus.QUEUED, stage=Stage.REQUEUED, progress=0)
        who = held.get("name", "?")
        logger.warning(f"task={job_id} requeued: its worker {who} stopped before starting it")
        returned.append(job_id)
    return returned


def _requeue_one(
    conn: redis.Redis, queue: Queue, settings: Settings, job: Job, owner: Owner | None
) -> bool:
    record = task_store.load(conn, job.id)
    if record is not None and record.status in (TaskStatus.DONE, TaskStatus.FAILED):
        logger.warning(f"task={job.id} was {record.status.value}; dropped its stale RQ entry")
        return False
    who = owner.name if owner else job.worker_name or "?"
    reason = _innocent_reason(conn, owner, job.id, job.started_at) if owner else None
    abandons = (record.abandons if record else 0) + (0 if reason else 1)
    if reason is None and abandons >= MAX_ABANDONS:
        _fail(conn, queue, job, settings, abandons)
        return True
    task_store.update(
        conn, job.id, status=TaskStatus.QUEUED, stage=Stage.REQUEUED, progress=0, abandons=abandons
    )
    job.started_at = None
    job.ended_at = None
    job.save()
    queue.enqueue_job(job, at_front=True)
    counted = f"not counted: {reason}" if reason else f"{abandons} of {MAX_ABANDONS}"
    logger.warning(f"task={job.id} requeued: its worker {who} stopped mid-job ({counted})")
    return True


def return_claimed(conn: redis.Redis, lanes: Lanes, worker: str) -> list[str]:
    """Requeue jobs a stopped worker claimed for a batch but never started; tasks back to queued."""
    returned = job_queue.return_claimed(conn, lanes, worker)
    for job_id in returned:
        task_store.update(conn, job_id, status=TaskStatus.QUEUED, stage=Stage.REQUEUED, progress=0)
        logger.warning(f"task={job_id} requeued: its worker {worker} stopped before running it")
    return returned


def mark_failed(
    conn: redis.Redis,
    settings: Settings,
    task_id: str,
    message: str,
    *,
    reason: FailureReason,
    enqueued_at: datetime | None = None,
) -> TaskRecord | None:
    """The one way a task becomes failed: state (with its TTL), history line, counters (by
    `reason`, and its queue wait when it had started since `enqueued_at`)."""
    failed = task_store.update(
        conn,
        task_id,
        ttl=settings.task_ttl_seconds,
        status=TaskStatus.FAILED,
        stage=Stage.FAILED,
        error=message,
        finished_at=utcnow(),
    )
    if failed is not None:
        history.record(conn, history.jsonl_path(settings), failed, settings.max_history_records)
        recordings.unpin(conn, failed.file)
        if failed.callback_url is not None:
            job_queue.enqueue_callback(conn, settings, task_id)
    waited = metrics.elapsed(enqueued_at, failed.started_at) if failed else None
    with conn.pipeline(transaction=False) as pipe:
        stats.record_failed(pipe)
        metrics.record_failure(pipe, reason, waited)
        pipe.execute()
    return failed


def _fail(conn: redis.Redis, queue: Queue, job: Job, settings: Settings, abandons: int) -> None:
    message = (
        f"The worker stopped while processing this task ({abandons} times, each time alone and "
        "with Redis up): it may be what makes the worker crash"
    )
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry(queue=queue).add(job, ttl=settings.task_ttl_seconds, exc_string=message)
    mark_failed(conn, settings, job.id, message, reason="abandoned", enqueued_at=job.enqueued_at)
    logger.error(f"task={job.id} status=failed error={message}")
