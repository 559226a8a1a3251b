"""What the API does with a task: submit, look up, retry, delete. Routes stay thin around these.

Ordering keeps bad input and outages from leaving debris: Redis is touched first (a 503 before
anything is written), the upload is checked by its content before it is kept, and a failure
after the file is stored removes the file again.
"""

from __future__ import annotations

import contextlib
import json
import time
import unicodedata
from pathlib import PurePath
from typing import Any, BinaryIO

import redis
import redis.asyncio
from loguru import logger
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job

from src.config import Settings
from src.media.audio import SUPPORTED_FORMATS, AudioError, probe, verify
from src.queue import job_queue
from src.records import task_store
from src.records.redis_client import READY_WORKERS_KEY, REDIS_ERRORS, worker_key
from src.records.task_store import TaskRecord, utcnow
from src.results import history, stats
from src.service.errors import (
    AudioTooLong,
    InvalidAudio,
    RecordingGone,
    RecordingNotFound,
    ServiceError,
    StorageFull,
    TaskNotFailed,
    TaskNotFound,
    UnsupportedLanguage,
    UploadTooLarge,
)
from src.uploads import recordings
from src.uploads.recordings import StorageFullError, UploadTooLargeError
from src.vocabulary import TaskStatus

API_PREFIX = "/api/v1"
# Uploads up to this size (a voice note is ~100 KB a minute) are decoded in full at submit, so a
# file corrupt past its header gets a 400 now instead of a failed job later; bigger ones are only
# probed here and fully checked by the worker.
FULL_CHECK_MAX_BYTES = 4 * 1024 * 1024


def result_url(task_id: str) -> str:
    return f"{API_PREFIX}/asr/result/{task_id}"


def audio_url(task_id: str) -> str:
    return f"{API_PREFIX}/asr/audio/{task_id}"


def retry_url(task_id: str) -> str:
    return f"{API_PREFIX}/asr/retry/{task_id}"


def display_name(filename: str | None) -> str:
    """The client's file name, safe to show and log: no directories, control chars or huge names."""
    name = PurePath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = name[:255]
    return "upload" if name.strip(". ") == "" else name  # no "..", "." or blank as a name


def bad_audio(exc: AudioError) -> ServiceError:
    """Too long is a limit the client can meet by cutting the clip; the rest is not audio."""
    if exc.reason == "too_long":
        return AudioTooLong(str(exc), reason=exc.reason)
    return InvalidAudio(
        detail=str(exc), reason=exc.reason, supported_formats=list(SUPPORTED_FORMATS)
    )


def submit(
    conn: redis.Redis,
    queue: Queue,
    settings: Settings,
    upload: BinaryIO,
    filename: str | None,
    language: str,
    batch_size: int,
    hotwords: list[str],
) -> dict[str, Any]:
    """Store, check and enqueue one upload; returns the submit response body."""
    if language not in settings.asr_languages:
        raise UnsupportedLanguage(supported_languages=settings.asr_languages)
    now = utcnow()
    task_id = task_store.new_task_id(conn, now)  # Redis down -> 503 before any file exists
    recordings.ensure_dirs(settings)
    partial = recordings.partial_path(settings, task_id)
    try:
        size = recordings.save_stream(upload, partial, settings.max_upload_bytes)
        limit = settings.asr_max_audio_seconds
        if size <= FULL_CHECK_MAX_BYTES:
            info = verify(partial, max_duration_s=limit)
        else:
            info = probe(partial, max_duration_s=limit)
    except UploadTooLargeError as exc:
        raise UploadTooLarge(max_bytes=settings.max_upload_bytes) from exc
    except StorageFullError as exc:
        raise StorageFull() from exc
    except AudioError as exc:
        partial.unlink(missing_ok=True)
        raise bad_audio(exc) from exc
    name = recordings.finalize(settings, partial, task_id, info.extension)
    record = TaskRecord(
        task_id=task_id,
        filename=display_name(filename),
        file=name,
        size=size,
        format=info.extension,
        language=language,
        batch_size=batch_size,
        hotwords=hotwords,
        audio_duration=info.duration_s,
        created_at=now,
    )
    try:
        with conn.pipeline() as pipe:
            task_store.save(pipe, record)
            recordings.index_recording(pipe, name, now.timestamp())
            stats.incr_submitted(pipe)
            pipe.execute()
        job_queue.enqueue_task(queue, task_id, settings)
    except REDIS_ERRORS:
        _undo_submit(conn, settings, task_id, name)
        raise
    _trim_recordings(conn, settings)
    return {
        **_queued(conn, queue, task_id, info.duration_s),
        "_log": f"task={task_id} file={record.filename} size={size / 1e6:.2f}MB status=queued",
    }


def _queued(
    conn: redis.Redis, queue: Queue, task_id: str, audio_seconds: float | None
) -> dict[str, Any]:
    """The submit/retry answer: where the job stands and how long it should take."""
    pos = job_queue.position(queue, task_id)
    workers = len(job_queue.ready_workers(conn))
    return {
        "task_id": task_id,
        "status": "queued",
        "position": pos,
        "estimated_wait": job_queue.estimated_wait(conn, pos or 1, workers, audio_seconds),
        "result_url": result_url(task_id),
    }


def _undo_submit(conn: redis.Redis, settings: Settings, task_id: str, name: str) -> None:
    """Best effort after Redis failed mid-submit: no file without a task, no task without a job."""
    path = recordings.recording_path(settings, name)
    if path is not None:
        path.unlink(missing_ok=True)
    try:
        task_store.delete(conn, task_id)
        recordings.delete_recording(conn, settings, name)
    except REDIS_ERRORS:
        logger.error(f"task={task_id} could not be rolled back in Redis; it was never enqueued")


def _trim_recordings(conn: redis.Redis, settings: Settings) -> None:
    removed = recordings.enforce_retention(conn, settings)
    if removed:
        logger.info(f"retention removed {len(removed)} recording(s): {', '.join(removed)}")


def view(conn: redis.Redis, queue: Queue, task_id: str) -> dict[str, Any]:
    """The result body for one task, shaped by its status."""
    record = task_store.load(conn, task_id)
    if record is None:
        raise TaskNotFound(task_id=task_id)
    body: dict[str, Any] = {
        "task_id": task_id,
        "status": record.status.value,
        "progress": record.progress,
        "stage": record.stage,
        "filename": record.filename,
        "language": record.language,
        "created_at": record.created_at,
        "attempts": record.attempts,
        "audio_url": audio_url(task_id),
    }
    if record.status == TaskStatus.QUEUED:
        body["position"] = job_queue.position(queue, task_id)
    elif record.status == TaskStatus.PROCESSING:
        body["started_at"] = record.started_at
    elif record.status == TaskStatus.DONE:
        body.update(
            text=record.text,
            duration=record.duration,
            sentences=[s.model_dump() for s in record.sentences],
            hotwords=record.applied_hotwords,
            rtf=record.rtf,
            started_at=record.started_at,
            finished_at=record.finished_at,
        )
    else:
        body.update(
            error=record.error,
            retry_url=retry_url(task_id),
            duration=record.audio_duration,
            finished_at=record.finished_at,
        )
    return body


def retry(conn: redis.Redis, queue: Queue, settings: Settings, task_id: str) -> dict[str, Any]:
    record = task_store.load(conn, task_id)
    if record is None:
        raise TaskNotFound(task_id=task_id)
    if record.status != TaskStatus.FAILED:
        raise TaskNotFailed(task_id=task_id, status=record.status.value)
    if recordings.recording_path(settings, record.file) is None:
        raise RecordingGone(task_id=task_id)
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(task_id, connection=conn).delete()
    fresh = record.model_copy(
        update={
            "status": TaskStatus.QUEUED,
            "progress": 0,
            "stage": None,
            "error": None,
            "started_at": None,
            "finished_at": None,
            "text": None,
        }
    )
    task_store.save(conn, fresh)  # no TTL while it waits again
    recordings.pin(conn, record.file)
    job_queue.enqueue_task(queue, task_id, settings)
    return _queued(conn, queue, task_id, record.audio_duration)


def delete(conn: redis.Redis, settings: Settings, task_id: str) -> dict[str, Any]:
    """Remove the task, its queued job, its recording and its index and history entries."""
    record = task_store.load(conn, task_id)
    name = record.file if record else recordings.find_in_index(conn, task_id)
    if record is None and name is None:
        raise TaskNotFound(task_id=task_id)
    with contextlib.suppress(NoSuchJobError):
        Job.fetch(task_id, connection=conn).delete()  # also takes it off the queue
    task_store.delete(conn, task_id)
    history.remove(conn, task_id)
    removed = recordings.delete_recording(conn, settings, name) if name else False
    return {"task_id": task_id, "deleted": True, "recording_deleted": removed}


def find_audio(conn: redis.Redis, settings: Settings, task_id: str) -> tuple[str, str]:
    """(path, download name) of a task's original recording, only from the recordings dir."""
    record = task_store.load(conn, task_id)
    name = record.file if record else recordings.find_in_index(conn, task_id)
    path = recordings.recording_path(settings, name) if name else None
    if path is None:
        raise RecordingNotFound(task_id=task_id)
    ext = path.suffix
    download = record.filename if record else path.name
    if not download.lower().endswith(ext.lower()):
        download = f"{PurePath(download).stem or task_id}{ext}"
    return str(path), download


def uptime_text(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} day{'s' * (days != 1)} {hours} hour{'s' * (hours != 1)}"
    if hours:
        return f"{hours} hour{'s' * (hours != 1)} {minutes} minute{'s' * (minutes != 1)}"
    return f"{minutes} minute{'s' * (minutes != 1)}"


async def health(aconn: redis.asyncio.Redis, started: float) -> dict[str, Any]:
    """Readiness from the workers' beacons: `status` is "ready" or "unavailable" (the API turns
    the latter into its status code). Async on purpose: during an upload burst every thread of
    the pool may be busy with submissions, and a probe must not queue behind them."""
    up = time.time() - started
    body: dict[str, Any] = {
        "uptime": uptime_text(up),
        "uptime_seconds": round(up, 1),
        "redis_connected": False,
        "model_loaded": False,
        "workers_active": 0,
        "workers": [],
    }
    try:
        await aconn.ping()
        body["redis_connected"] = True
        names = await aconn.zrange(READY_WORKERS_KEY, 0, -1)
        raw = await aconn.mget([worker_key(n.decode()) for n in names]) if names else []
    except (*REDIS_ERRORS, TimeoutError, OSError):
        body.update(status="unavailable", error="Redis is unreachable")
        return body

    workers = [json.loads(r) for r in raw if r]
    body["workers"] = workers
    body["workers_active"] = len(workers)
    body["model_loaded"] = bool(workers)
    if not workers:
        body.update(status="unavailable", error="Models are still loading...")
        return body
    body["status"] = "ready"
    return body


def history_page(conn: redis.Redis, limit: int) -> dict[str, Any]:
    records = history.latest(conn, limit)
    for rec in records:
        rec["audio_url"] = audio_url(rec["task_id"])
    return {"total": conn.llen(history.HISTORY_KEY), "records": records}


def service_stats(conn: redis.Redis, settings: Settings, started: float) -> dict[str, Any]:
    values = stats.read(conn)
    audio = values.get("audio_seconds", 0.0)
    processing = values.get("processing_seconds", 0.0)
    up = time.time() - started
    return {
        "submitted": int(values.get("submitted", 0)),
        "done": int(values.get("done", 0)),
        "failed": int(values.get("failed", 0)),
        "audio_seconds": round(audio, 3),
        "processing_seconds": round(processing, 3),
        "mean_rtf": round(processing / audio, 4) if audio else None,
        "uptime": uptime_text(up),
        "uptime_seconds": round(up, 1),
        "workers_active": len(job_queue.ready_workers(conn)),
        "recordings": conn.zcard(recordings.AUDIO_INDEX_KEY),
        "storage_bytes": recordings.directory_size(settings.recordings_dir)
        + recordings.directory_size(settings.logs_dir),
        "history_write_errors": int(values.get("history_write_errors", 0)),
    }
