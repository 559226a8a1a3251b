"""Submit: store, check and enqueue one upload. The route stays thin around it.

Ordering keeps bad input and outages from leaving debris: Redis is touched first (a 503 before
anything is written), the upload is checked by its content before it is kept, and a failure
after the file is stored removes the file again.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePath

import redis
from loguru import logger

from src.config import Settings
from src.media.audio import SUPPORTED_FORMATS, AudioError, AudioInfo, probe, verify
from src.queue import job_queue
from src.queue.job_queue import Lanes, Place
from src.records import task_store
from src.records.redis_client import REDIS_ERRORS, run_batch, task_key
from src.records.task_store import TaskRecord, utcnow
from src.results import cache as result_cache
from src.results import history, stats
from src.service import callbacks, dedup
from src.service.errors import (
    AudioTooLong,
    IdempotencyConflict,
    InvalidAudio,
    ServiceError,
    StorageFull,
    UnsupportedLanguage,
    UploadTooLarge,
)
from src.service.models import Queued, SubmitRequest, Submitted
from src.uploads import recordings
from src.uploads.recordings import StorageFullError, UploadTooLargeError
from src.vocabulary import Stage, TaskStatus

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


@dataclass(frozen=True)
class _Stored:
    """A checked upload in its partial file, with the SHA-256 of its bytes."""

    partial: Path
    size: int
    sha256: str
    info: AudioInfo


def submit(
    conn: redis.Redis, lanes: Lanes, settings: Settings, request: SubmitRequest
) -> Submitted:
    """Store, check and enqueue one upload; or answer it from the result cache, or, for a resent
    Idempotency-Key, with the task the key's first request created (src/service/dedup.py)."""
    if request.language not in settings.asr_languages:
        raise UnsupportedLanguage(supported_languages=settings.asr_languages)
    if request.callback_url is not None:  # refused before anything is stored
        callbacks.check_url(request.callback_url, settings)
    now = utcnow()
    task_id = task_store.new_task_id(conn, now)  # Redis down -> 503 before any file exists
    recordings.ensure_dirs(settings)
    stored = _store(settings, request, recordings.partial_path(settings, task_id))
    try:
        key = dedup.fingerprint(settings, stored.sha256, request.language, request.hotwords)
        claim = None
        if request.idempotency_key is not None and settings.idempotency_seconds:
            identity = dedup.request_fingerprint(key, request.batch_size, request.callback_url)
            claim = dedup.claim_for(settings, request.idempotency_key, identity)
        record = _new_record(conn, settings, request, stored, task_id, now, key)
    except BaseException:
        stored.partial.unlink(missing_ok=True)
        raise
    try:
        if not record.cached:  # named before its job exists: a worker may take it at once
            recordings.finalize(settings, stored.partial, task_id, stored.info.extension)
        held = _commit(conn, lanes, settings, record, claim)
    except BaseException as exc:
        _discard(settings, stored, record)
        if isinstance(exc, REDIS_ERRORS):  # EXEC may have run before the connection failed
            _undo_submit(conn, settings, task_id, record.file)
        raise
    if held is not None:
        _discard(settings, stored, record)
        return _replay(conn, lanes, held, claim)
    if record.cached:
        stored.partial.unlink(missing_ok=True)
        history.record(conn, history.jsonl_path(settings), record, settings.max_history_records)
        answer = Queued(
            task_id=task_id, status=record.status, position=0, estimated_wait=0, cached=True
        )
        return Submitted(**answer.model_dump(), filename=record.filename, size=stored.size)
    queued = _trim_and_answer(conn, lanes, settings, task_id, stored.info.duration_s)
    return Submitted(**queued.model_dump(), filename=record.filename, size=stored.size)


def _store(settings: Settings, request: SubmitRequest, partial: Path) -> _Stored:
    """Save the upload, hashing it on the way, and check it by its content."""
    digest = hashlib.sha256()
    try:
        size = recordings.save_stream(
            request.upload, partial, settings.max_upload_bytes, digest.update
        )
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
    return _Stored(partial=partial, size=size, sha256=digest.hexdigest(), info=info)


def _new_record(
    conn: redis.Redis,
    settings: Settings,
    request: SubmitRequest,
    stored: _Stored,
    task_id: str,
    now: datetime,
    key: str,
) -> TaskRecord:
    """The new task's record: queued with its own recording, or, when a done task has this
    fingerprint's transcript, done at once with that transcript and no recording of its own
    (its audio is the source's, served while the source keeps it)."""
    record = TaskRecord(
        task_id=task_id,
        filename=display_name(request.filename),
        file=recordings.stored_name(task_id, stored.info.extension),
        size=stored.size,
        format=stored.info.extension,
        language=request.language,
        batch_size=request.batch_size,
        hotwords=request.hotwords,
        audio_duration=stored.info.duration_s,
        priority=request.priority or job_queue.lane_for(settings, stored.info.duration_s),
        created_at=now,
        fingerprint=key,
        callback_url=request.callback_url,
    )
    source = result_cache.lookup(conn, key) if settings.result_cache_seconds else None
    if source is None:
        return record
    return record.model_copy(
        update={
            "status": TaskStatus.DONE,
            "stage": Stage.DONE,
            "progress": 100,
            "file": "",
            "finished_at": now,
            "text": source.text,
            "duration": source.duration,
            "sentences": source.sentences,
            "applied_hotwords": source.applied_hotwords,
            "cached": True,
            "cached_from": source.task_id,
        }
    )


@dataclass(frozen=True)
class _Held:
    """An Idempotency-Key's claim that names a task still on record."""

    claimed: dedup.Claimed
    record: TaskRecord


def _discard(settings: Settings, stored: _Stored, record: TaskRecord) -> None:
    """Remove this request's upload, under its partial or its final name."""
    stored.partial.unlink(missing_ok=True)
    if record.file:
        (settings.recordings_dir / record.file).unlink(missing_ok=True)


def _commit(
    conn: redis.Redis,
    lanes: Lanes,
    settings: Settings,
    record: TaskRecord,
    claim: dedup.Claim | None,
) -> _Held | None:
    """Write the new task, its RQ job and its Idempotency-Key claim in one transaction; None
    when written. A record without its job would wait forever, and a Redis crash between two
    transactions could keep just the first (AOF everysec): hence one MULTI/EXEC.

    The claim is a compare-and-set: WATCH the key, read it, and write claim and record together
    in MULTI/EXEC. Of two concurrent requests with one key exactly one EXEC succeeds; the other
    finds the claim, with its task already on record, and answers with that task. A claim whose
    task is gone (deleted, expired) is free again.
    """
    with conn.pipeline() as pipe:
        while True:
            try:
                if claim is not None:
                    pipe.watch(claim.key)
                    claimed = dedup.read_claim(pipe, claim)
                    if claimed is not None:
                        raw = pipe.get(task_key(claimed.task_id))
                        if raw is not None:
                            pipe.unwatch()
                            return _Held(claimed, TaskRecord.model_validate_json(raw))
                pipe.multi()
                if claim is not None:
                    ttl = settings.idempotency_seconds
                    pipe.set(claim.key, claim.value(record.task_id), ex=ttl)
                if record.cached:
                    task_store.save(pipe, record, ttl=settings.task_ttl_seconds)
                    stats.record_cached(pipe)
                    if record.callback_url is not None:  # done at once: deliver it now
                        job_queue.enqueue_callback(conn, settings, record.task_id, pipe)
                else:
                    task_store.save(pipe, record)  # no TTL while it waits
                    recordings.index_recording(pipe, record.file, record.created_at.timestamp())
                    queue = lanes[record.priority]
                    job_queue.enqueue_task(queue, record.task_id, settings, pipe)
                stats.incr_submitted(pipe)
                pipe.execute()
                return None
            except redis.WatchError:
                continue


def _replay(conn: redis.Redis, lanes: Lanes, held: _Held, claim: dedup.Claim | None) -> Submitted:
    """A resent Idempotency-Key: the task of its first request as it stands now, or a 409 when
    this request is not the one the key was first used for."""
    if claim is None or held.claimed.request != claim.request:
        raise IdempotencyConflict(task_id=held.claimed.task_id)
    record = held.record
    if record.status in (TaskStatus.QUEUED, TaskStatus.PROCESSING):
        answer = queued_answer(conn, lanes, record.task_id, record.audio_duration)
    else:
        answer = Queued(
            task_id=record.task_id,
            status=record.status,
            position=0,
            estimated_wait=0,
            cached=record.cached,
        )
    return Submitted(
        **answer.model_dump(), filename=record.filename, size=record.size, replayed=True
    )


def standing(
    status: TaskStatus, where: Place | None
) -> tuple[TaskStatus, int | None, Place | None]:
    """The status and position a client is shown for a task whose record says `status` and
    whose job is at `where` in the lanes (None: on no lane).

    A queued task is either n-th in line across the lanes (position n >= 1: the jobs in higher
    lanes count as ahead of it) or a worker already has it: a worker took it off its lane, or a
    batch claimed it, before the worker marked the record. It is then shown as `processing` at
    position 0, so `queued` always comes with a place in line and 0 always means a worker has it.
    A finished task has no position.
    """
    if status == TaskStatus.QUEUED:
        if where is not None:
            return status, where.position, where
        status = TaskStatus.PROCESSING
    return status, 0 if status == TaskStatus.PROCESSING else None, None


def queued_answer(
    conn: redis.Redis, lanes: Lanes, task_id: str, audio_seconds: float | None
) -> Queued:
    """The submit/retry answer: where the job stands and how long it should take."""
    return _answer(task_id, job_queue.outlook(conn, lanes, task_id), audio_seconds)


def _answer(task_id: str, seen: job_queue.Outlook, audio_seconds: float | None) -> Queued:
    status, pos, where = standing(TaskStatus.QUEUED, seen.place)
    return Queued(
        task_id=task_id,
        status=status,
        position=pos or 0,
        estimated_wait=seen.wait(audio_seconds),
        priority=where.lane if where else None,
    )


def _undo_submit(conn: redis.Redis, settings: Settings, task_id: str, name: str) -> None:
    """Best effort after Redis failed mid-submit: no file without a task, no task without a job.
    An Idempotency-Key claim naming the task is left: a claim whose task is gone is free."""
    path = recordings.recording_path(settings, name)
    if path is not None:
        path.unlink(missing_ok=True)
    try:
        task_store.delete(conn, task_id)
        recordings.delete_recording(conn, settings, name)
    except REDIS_ERRORS:
        logger.error(f"task={task_id} could not be rolled back in Redis; it was never enqueued")


def _trim_and_answer(
    conn: redis.Redis, lanes: Lanes, settings: Settings, task_id: str, audio_seconds: float | None
) -> Queued:
    """Retention's pass and the answer's reads in one pipeline: the submit's last round trip.
    Retention runs first, as it did when it was a step of its own."""
    with conn.pipeline(transaction=False) as pipe:
        recordings.queue_retention(pipe, settings)
        job_queue.read_outlook(pipe, lanes, task_id)
        retained, *seen = run_batch(pipe)
    removed = recordings.retention_done(conn, settings, retained)
    if removed:
        logger.info(f"retention removed {len(removed)} recording(s): {', '.join(removed)}")
    return _answer(task_id, job_queue.outlook_from(conn, seen), audio_seconds)
