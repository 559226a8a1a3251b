"""Submit: store, check and enqueue one upload. The route stays thin around it.

Ordering keeps bad input and outages from leaving debris: Redis is touched first (a 503 before
anything is written), the upload is checked by its content before it is kept, and a failure
after the file is stored removes the file again.
"""

from __future__ import annotations

import unicodedata
from pathlib import PurePath

import redis
from loguru import logger
from rq import Queue

from src.config import Settings
from src.media.audio import SUPPORTED_FORMATS, AudioError, probe, verify
from src.queue import job_queue
from src.records import task_store
from src.records.redis_client import REDIS_ERRORS
from src.records.task_store import TaskRecord, utcnow
from src.results import stats
from src.service.errors import (
    AudioTooLong,
    InvalidAudio,
    ServiceError,
    StorageFull,
    UnsupportedLanguage,
    UploadTooLarge,
)
from src.service.models import Queued, SubmitRequest, Submitted
from src.uploads import recordings
from src.uploads.recordings import StorageFullError, UploadTooLargeError
from src.vocabulary import TaskStatus

# Uploads up to this size (a voice note is ~100 KB a minute) are decoded in full at submit, so a
# file corrupt past its header gets a 400 now instead of a failed job later; bigger ones are only
# probed here and fully checked by the worker.
FULL_CHECK_MAX_BYTES = 4 * 1024 * 1024


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
    conn: redis.Redis, queue: Queue, settings: Settings, request: SubmitRequest
) -> Submitted:
    """Store, check and enqueue one upload."""
    if request.language not in settings.asr_languages:
        raise UnsupportedLanguage(supported_languages=settings.asr_languages)
    now = utcnow()
    task_id = task_store.new_task_id(conn, now)  # Redis down -> 503 before any file exists
    recordings.ensure_dirs(settings)
    partial = recordings.partial_path(settings, task_id)
    try:
        size = recordings.save_stream(request.upload, partial, settings.max_upload_bytes)
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
        filename=display_name(request.filename),
        file=name,
        size=size,
        format=info.extension,
        language=request.language,
        batch_size=request.batch_size,
        hotwords=request.hotwords,
        audio_duration=info.duration_s,
        created_at=now,
    )
    try:
        # One MULTI/EXEC with the job: a record without its job would wait forever, and a
        # Redis crash between two transactions could keep just the first (AOF everysec).
        with conn.pipeline() as pipe:
            pipe.multi()  # opened here: RQ would call multi() after commands are queued, an error
            task_store.save(pipe, record)
            recordings.index_recording(pipe, name, now.timestamp())
            stats.incr_submitted(pipe)
            job_queue.enqueue_task(queue, task_id, settings, pipe)
            pipe.execute()
    except REDIS_ERRORS:
        _undo_submit(conn, settings, task_id, name)
        raise
    _trim_recordings(conn, settings)
    queued = queued_answer(conn, queue, task_id, info.duration_s)
    return Submitted(**queued.model_dump(), filename=record.filename, size=size)


def standing(queue: Queue, task_id: str, status: TaskStatus) -> tuple[TaskStatus, int | None]:
    """The status and position a client is shown for a task whose record says `status`.

    A queued task is either n-th in the queue (position n >= 1) or a worker already has it: RQ
    took it off the queue, or a batch claimed it, before the worker marked the record. It is then
    shown as `processing` at position 0, so `queued` always comes with a place in line and 0
    always means a worker has it. A finished task has no position.
    """
    if status == TaskStatus.QUEUED:
        pos = job_queue.position(queue, task_id)
        if pos is not None:
            return status, pos
        status = TaskStatus.PROCESSING
    return status, 0 if status == TaskStatus.PROCESSING else None


def queued_answer(
    conn: redis.Redis, queue: Queue, task_id: str, audio_seconds: float | None
) -> Queued:
    """The submit/retry answer: where the job stands and how long it should take."""
    status, pos = standing(queue, task_id, TaskStatus.QUEUED)
    workers = len(job_queue.ready_workers(conn))
    return Queued(
        task_id=task_id,
        status=status,
        position=pos or 0,
        estimated_wait=job_queue.estimated_wait(conn, pos or 1, workers, audio_seconds),
    )


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
