"""The service's own state: readiness, queue figures, recent history, counters."""

from __future__ import annotations

import json
import time
from typing import cast

import redis
import redis.asyncio

from src.config import Settings
from src.queue import job_queue
from src.queue.job_queue import Lanes
from src.records import worker_start
from src.records.redis_client import (
    AUDIO_INDEX_KEY,
    READY_WORKERS_KEY,
    REDIS_ERRORS,
    decoded,
    worker_key,
)
from src.records.worker_start import WorkerStart
from src.results import history, stats
from src.service.models import Health, HistoryPage, QueueFigures, ServiceStats, WorkerInfo
from src.uploads import recordings

LOADING = "Models are still loading..."
# Said only when no worker has published anything: none runs, or one is still importing its
# engine's libraries before it can (the supervisor's first ~14 s).
NO_WORKER = "No worker has reported yet: are the workers running (scripts/start_workers.sh)?"

# What an unreachable Redis raises in the async client, socket errors included.
UNREACHABLE: tuple[type[Exception], ...] = (*REDIS_ERRORS, TimeoutError, OSError)


def uptime_text(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} day{'s' * (days != 1)} {hours} hour{'s' * (hours != 1)}"
    if hours:
        return f"{hours} hour{'s' * (hours != 1)} {minutes} minute{'s' * (minutes != 1)}"
    return f"{minutes} minute{'s' * (minutes != 1)}"


async def health(aconn: redis.asyncio.Redis, started: float) -> Health:
    """Readiness from the workers' beacons: `status` is "ready" or "unavailable" (the API turns
    the latter into its status code). Async on purpose: during an upload burst every thread of
    the pool may be busy with submissions, and a probe must not queue behind them."""
    up = time.time() - started
    body = Health(uptime=uptime_text(up), uptime_seconds=round(up, 1))
    try:
        await aconn.ping()
        body.redis_connected = True
        # Without WITHSCORES the reply holds members only.
        names = cast("list[bytes | str]", await aconn.zrange(READY_WORKERS_KEY, 0, -1))
        raw = await aconn.mget([worker_key(decoded(n)) for n in names]) if names else []
        starting = await worker_start.starting(aconn)
    except UNREACHABLE:
        body.error = "Redis is unreachable"
        return body

    body.workers = [WorkerInfo.model_validate(json.loads(r)) for r in raw if r]
    body.workers_active = len(body.workers)
    body.model_loaded = bool(body.workers)
    ready = {worker.name for worker in body.workers}
    body.workers_starting = [s for s in starting if s.name not in ready]
    if not body.workers:
        body.error = not_ready_reason(body.workers_starting)
        return body
    body.status = "ready"
    return body


def not_ready_reason(starting: list[WorkerStart]) -> str:
    """Why no worker is ready, from what the starting ones say, e.g. "worker-1, worker-2: ASR_MODEL
    iic/... not found in ...: run `...download_models.py`". Workers with the same reason share
    one entry: a first run's workers all lack the same models."""
    if not starting:
        return NO_WORKER
    if all(s.state == "loading" and not s.error for s in starting):
        return LOADING
    by_reason: dict[str, list[str]] = {}
    for s in starting:
        if s.error is None:
            why = "loading its engine"
        elif s.state == "loading":
            why = f"trying again after: {s.error}"
        else:
            why = s.error
        by_reason.setdefault(why, []).append(s.name)
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in by_reason.items())


def queue_figures(conn: redis.Redis, lanes: Lanes) -> QueueFigures:
    return QueueFigures(**job_queue.queue_status(conn, lanes))


def history_page(conn: redis.Redis, limit: int) -> HistoryPage:
    return HistoryPage(total=history.count(conn), entries=history.latest(conn, limit))


def service_stats(conn: redis.Redis, settings: Settings, started: float) -> ServiceStats:
    values = stats.read(conn)
    audio = values.get("audio_seconds", 0.0)
    processing = values.get("processing_seconds", 0.0)
    up = time.time() - started
    return ServiceStats(
        submitted=int(values.get("submitted", 0)),
        done=int(values.get("done", 0)),
        failed=int(values.get("failed", 0)),
        audio_seconds=round(audio, 3),
        processing_seconds=round(processing, 3),
        mean_rtf=round(processing / audio, 4) if audio else None,
        uptime=uptime_text(up),
        uptime_seconds=round(up, 1),
        workers_active=len(job_queue.ready_workers(conn)),
        recordings=int(conn.zcard(AUDIO_INDEX_KEY)),
        storage_bytes=recordings.directory_size(settings.recordings_dir)
        + recordings.directory_size(settings.logs_dir),
        history_write_errors=int(values.get("history_write_errors", 0)),
        cached=int(values.get("cached", 0)),
    )
