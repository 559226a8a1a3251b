"""Finding jobs whose worker died mid-run, and putting them back on the queue at once.

RQ notices an abandoned job only when its StartedJobRegistry entry expires (the job timeout plus a
minute) and then marks it failed. A killed worker should instead cost a re-run within seconds, so
every worker sweeps the registry every few seconds: a job whose owner is gone goes back to the
front of the queue and its task back to "queued". Who owns a job is decided from the owner's
readiness beacon and, on this host, from whether its pid still exists; the ZREM of the registry
entry decides which sweeper requeues it, so a job is never requeued twice.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import redis
from loguru import logger
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry, StartedJobRegistry

from src.asr.config import Settings
from src.utils import file_handler, history, job_queue, stats, task_store
from src.utils.redis_client import worker_key
from src.utils.task_store import TaskRecord, TaskStatus, utcnow

# A task whose worker died this many times is failed instead of requeued: it may be the cause.
MAX_ABANDONS = 3
RQ_WORKER_PREFIX = "rq:worker:"


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


def _owner_info(conn: redis.Redis, name: str) -> dict[str, str] | None:
    raw = conn.get(worker_key(name))
    if raw:
        data = json.loads(raw)
        return {"hostname": str(data.get("hostname", "")), "pid": str(data.get("pid", 0))}
    fields = conn.hgetall(RQ_WORKER_PREFIX + name)
    if not fields:
        return None
    info = {k.decode(): v.decode() for k, v in fields.items()}
    if "death" in info:
        return None
    return info


def worker_alive(conn: redis.Redis, name: str) -> bool:
    """Alive if it has a beacon or an RQ registration; on this host, only if its pid exists."""
    info = _owner_info(conn, name)
    if info is None:
        return False
    if info.get("hostname") == socket.gethostname():
        return pid_alive(int(info.get("pid") or 0))
    return True


def requeue_abandoned(conn: redis.Redis, queue: Queue, settings: Settings) -> list[str]:
    """Requeue (or, after MAX_ABANDONS, fail) started jobs whose worker is gone."""
    registry = StartedJobRegistry(queue=queue)
    moved: list[str] = []
    for job_id, execution_id in registry.get_job_and_execution_ids(cleanup=False):
        entry = f"{job_id}:{execution_id}"
        try:
            job = Job.fetch(job_id, connection=conn)
        except NoSuchJobError:
            conn.zrem(registry.key, entry)
            continue
        if job.worker_name and worker_alive(conn, job.worker_name):
            continue
        if not conn.zrem(registry.key, entry):
            continue  # another sweeper took it
        record = task_store.load(conn, job_id)
        if record is not None and record.attempts >= MAX_ABANDONS:
            _fail(conn, queue, job, settings, record.attempts)
            moved.append(job_id)
            continue
        task_store.update(conn, job_id, status=TaskStatus.QUEUED, stage="requeued", progress=0)
        job.started_at = None
        job.ended_at = None
        job.save()
        queue.enqueue_job(job, at_front=True)
        logger.warning(
            f"task={job_id} requeued: its worker {job.worker_name or '?'} stopped mid-job "
            f"(attempt {record.attempts if record else '?'} of {MAX_ABANDONS})"
        )
        moved.append(job_id)
    return moved


def return_claimed(conn: redis.Redis, queue: Queue, worker: str) -> list[str]:
    """Requeue jobs a stopped worker claimed for a batch but never started; tasks back to queued."""
    returned = job_queue.return_claimed(conn, queue, worker)
    for job_id in returned:
        task_store.update(conn, job_id, status=TaskStatus.QUEUED, stage="requeued", progress=0)
        logger.warning(f"task={job_id} requeued: its worker {worker} stopped before running it")
    return returned


def mark_failed(
    conn: redis.Redis, settings: Settings, task_id: str, message: str
) -> TaskRecord | None:
    """The one way a task becomes failed: state (with its TTL), history line, counter."""
    failed = task_store.update(
        conn,
        task_id,
        ttl=settings.task_ttl_seconds,
        status=TaskStatus.FAILED,
        stage="failed",
        error=message,
        finished_at=utcnow(),
    )
    if failed is not None:
        history.record(conn, settings.history_file, failed, settings.max_history_records)
        file_handler.unpin(conn, failed.file)
    stats.record_failed(conn)
    return failed


def _fail(conn: redis.Redis, queue: Queue, job: Job, settings: Settings, attempts: int) -> None:
    message = f"The worker stopped while processing this task ({attempts} times)"
    job.set_status(JobStatus.FAILED)
    FailedJobRegistry(queue=queue).add(job, ttl=settings.task_ttl_seconds, exc_string=message)
    mark_failed(conn, settings, job.id, message)
    logger.error(f"task={job.id} status=failed error={message}")
