"""The RQ side: enqueueing transcriptions by dotted path, positions, queue figures, wait estimates.

Jobs are enqueued as the string "src.api.tasks.transcribe", so the API process never imports the
job module (nor torch/FunASR behind it). The RQ job id is the task id.
"""

from __future__ import annotations

import math

import redis
from rq import Queue, Worker
from rq.job import Callback, Job
from rq.registry import FailedJobRegistry, StartedJobRegistry

from src.asr.config import Settings
from src.utils import stats
from src.utils.redis_client import WORKER_KEY_PREFIX

JOB_FUNC = "src.api.tasks.transcribe"
FAILURE_CALLBACK = "src.api.tasks.on_failure"
# Until the service has timed real jobs, assume this many seconds per job (documented in README).
DEFAULT_JOB_SECONDS = 10.0


def get_queue(conn: redis.Redis, settings: Settings) -> Queue:
    return Queue(
        settings.rq_queue_name, connection=conn, default_timeout=settings.rq_worker_timeout
    )


def enqueue_transcription(queue: Queue, task_id: str, settings: Settings) -> Job:
    return queue.enqueue(
        JOB_FUNC,
        task_id,
        job_id=task_id,
        job_timeout=settings.rq_worker_timeout,
        result_ttl=settings.task_ttl_seconds,
        failure_ttl=max(settings.task_ttl_seconds, 86400),
        on_failure=Callback(FAILURE_CALLBACK),
        description=f"transcribe {task_id}",
    )


def position(queue: Queue, job_id: str) -> int | None:
    """1-based place in the queue (1 = next to be taken), None once a worker has it."""
    pos = queue.get_job_position(job_id)
    return None if pos is None else pos + 1


def ready_workers(conn: redis.Redis) -> list[bytes]:
    """Keys of workers that published readiness (model loaded) within their TTL."""
    return list(conn.scan_iter(match=f"{WORKER_KEY_PREFIX}*", count=100))


def estimated_wait(conn: redis.Redis, ahead: int, workers: int) -> int:
    """Seconds until a job `ahead` places back starts and finishes, from observed job times."""
    per_job = stats.mean_processing_seconds(conn) or DEFAULT_JOB_SECONDS
    return math.ceil(ahead * per_job / max(workers, 1))


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
