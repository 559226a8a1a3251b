"""RQ job functions. They run inside a worker process (see src/worker/process.py), never in the API.

They take the worker's settings, engine, name and batch state from its `WorkerContext`
(src/worker/context.py), never from the environment, so settings given to the worker reach them.
They know the engine only through src/engine/interface.py: what it computes is the engine's
business, storing and publishing the result is theirs.

The API enqueues them by dotted path (`JOB_FUNC` in src/queue/job_queue.py), so importing the API
does not import this module or any engine.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from loguru import logger
from rq import Worker, get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from src.config import Settings, get_settings
from src.engine.interface import EngineError, EngineInput, EngineOutput, ProgressFn
from src.media.audio import AudioError
from src.queue import job_queue
from src.queue.recovery import mark_failed
from src.records import task_store
from src.records.redis_client import worker_connection
from src.records.task_store import TaskRecord, utcnow
from src.results import cache as result_cache
from src.results import history, metrics, stats
from src.results.metrics import FailureReason
from src.service import callbacks
from src.uploads import fetch, recordings
from src.uploads.fetch import RecordingFetchError
from src.vocabulary import Stage, TaskStatus
from src.worker.context import WorkerContext, bound_or_none, current

# Write progress to Redis only when it moved this many points (or the stage changed), and never
# sooner than this after the job started or the last write: each write is a transaction and an
# event, and on a voice note they cost 7 points of the worker's throughput against a direct
# loop (report/PERFORMANCE.md); nobody watches a stage that lasts a few milliseconds.
PROGRESS_STEP = 5
PROGRESS_MIN_INTERVAL_S = 0.25


class RecordingMissingError(FileNotFoundError):
    """The task's recording was deleted before a worker reached it."""


def _progress_writer(conn: redis.Redis, task_id: str, name: str) -> ProgressFn:
    last_stage: Stage | None = None
    last_pct = -PROGRESS_STEP
    last_write = time.monotonic()  # the job's start wrote `processing`

    def report(stage: Stage, fraction: float) -> None:
        nonlocal last_stage, last_pct, last_write
        # Never backwards, even when an out-of-memory retry starts the stages again.
        pct = max(1, min(99, int(fraction * 100)), last_pct)
        if stage == last_stage and pct - last_pct < PROGRESS_STEP:
            return
        if time.monotonic() - last_write < PROGRESS_MIN_INTERVAL_S:
            return
        last_stage, last_pct, last_write = stage, pct, time.monotonic()
        task_store.update(conn, task_id, progress=pct, stage=stage.value)
        logger.debug(f"{name} task={task_id} stage={stage.value} progress={pct}")

    return report


def engine_input(conn: redis.Redis, record: TaskRecord, path: Path, name: str) -> EngineInput:
    """The engine's view of a task: its recording, options and a progress writer."""
    return EngineInput(
        task_id=record.task_id,
        path=path,
        language=record.language,
        hotwords=tuple(record.hotwords),
        batch_size_s=record.batch_size,
        progress=_progress_writer(conn, record.task_id, name),
    )


def _mark_started(conn: redis.Redis, record: TaskRecord, name: str) -> TaskRecord | None:
    return task_store.update(
        conn,
        record.task_id,
        status=TaskStatus.PROCESSING,
        stage=Stage.DECODE,
        progress=1,
        started_at=utcnow(),
        worker_id=name,
        attempts=record.attempts + 1,
        error=None,
    )


def _batchable(record: TaskRecord, settings: Settings) -> bool:
    duration = record.audio_duration
    return duration is not None and duration <= settings.asr_batch_max_audio_seconds


def claim_batch(conn: redis.Redis, ctx: WorkerContext, leader: TaskRecord) -> list[TaskRecord]:
    """Take up to the engine's `max_batch` - 1 more short queued tasks off the leader's lane
    (batching never mixes lanes: a low job must not ride ahead in a high job's batch)."""
    settings = ctx.settings
    limit = ctx.engine.max_batch
    if limit <= 1 or not _batchable(leader, settings):
        return []
    running = get_current_job()
    queue = job_queue.get_lanes(conn, settings).named(running.origin if running else "")
    # A fair share of what is queued, so one worker does not batch away the other workers' work.
    share = math.ceil(queue.count / max(1, Worker.count(connection=conn, queue=queue)))
    want = min(limit - 1, share)
    wanted: list[TaskRecord] = []
    for task_id in job_queue.peek(queue, want * 4) if want > 0 else []:
        record = task_store.load(conn, task_id)
        if (
            record is not None
            and record.status == TaskStatus.QUEUED
            and _batchable(record, settings)
        ):
            wanted.append(record)
            if len(wanted) == want:
                break
    got = set(job_queue.claim(conn, queue, ctx.name, [r.task_id for r in wanted]))
    return [r for r in wanted if r.task_id in got]


def process_batch(
    conn: redis.Redis, ctx: WorkerContext, leader: EngineInput, claimed: list[TaskRecord]
) -> tuple[EngineOutput, int]:
    """One pooled pass over the leader and the claimed tasks; the leader's result comes back
    with the pass's size, the others wait in `ctx.batch` for their own jobs, which the worker
    runs next."""
    settings, name = ctx.settings, ctx.name
    members = [leader]
    with contextlib.ExitStack() as copies:  # downloaded members' files live for the pass
        for record in claimed:
            try:
                member_path = copies.enter_context(fetch.recording(settings, record.file))
            except RecordingFetchError as exc:  # its own job tries again and reports it
                logger.warning(f"{name} task={record.task_id} left out of the batch: {exc}")
                continue
            started = _mark_started(conn, record, name) if member_path is not None else None
            if started is not None and member_path is not None:
                ctx.batch.started.add(record.task_id)
                members.append(engine_input(conn, started, member_path, name))
        began = time.perf_counter()
        results = ctx.engine.process_batch(members)
    audio = sum(r.duration for r in results if isinstance(r, EngineOutput))
    logger.info(
        f"{name} batch of {len(members)} tasks ({audio:.1f}s of audio) in "
        f"{time.perf_counter() - began:.2f}s: {', '.join(m.task_id for m in members)}"
    )
    for member, result in zip(members[1:], results[1:], strict=True):
        if isinstance(result, EngineOutput):
            ctx.batch.outputs[member.task_id] = result
        else:  # its own job runs it alone and reports the error (or succeeds, after OOM)
            logger.warning(f"{name} task={member.task_id} left its batch: {result}")
    if isinstance(results[0], EngineOutput):
        return results[0], len(members)
    return ctx.engine.process(leader), len(members)


def process_task(task_id: str) -> dict[str, Any]:
    """Run the engine on one stored upload and publish the result, history line and counters."""
    ctx = current()
    settings, name = ctx.settings, ctx.name
    job = get_current_job()
    conn: redis.Redis = job.connection if job else worker_connection(settings)
    record = task_store.load(conn, task_id)
    if record is None:
        logger.warning(f"{name} task={task_id} skipped: task was deleted")
        return {"skipped": True}
    if task_id not in ctx.batch.started:
        record = _mark_started(conn, record, name)
        if record is None:
            return {"skipped": True}
    result = ctx.batch.take(task_id)
    pass_size = 0  # jobs in the engine pass this job ran; 0: a batch's pass made its result
    if result is None:
        with fetch.recording(settings, record.file) as path:
            if path is None:
                raise RecordingMissingError(f"recording {record.file} no longer exists")
            logger.info(
                f"{name} task={task_id} status=started file={record.file} "
                f"language={record.language} batch_size={record.batch_size}"
            )
            item = engine_input(conn, record, path, name)
            claimed = claim_batch(conn, ctx, record) if job is not None else []
            if claimed:
                result, pass_size = process_batch(conn, ctx, item, claimed)
            else:
                result, pass_size = ctx.engine.process(item), 1
    # One line for all segments: a line per segment (14 on a 17 s voice note) cost a worker 1 ms
    # a job through loguru's queue, about 1 % of its throughput on short clips (PERFORMANCE.md).
    spans = " ".join(f"{s.start}-{s.end}ms/{len(s.text)}" for s in result.sentences)
    logger.debug(f"{name} task={task_id} segments (start-end/text_length): {spans}")
    done = task_store.update(
        conn,
        task_id,
        ttl=settings.task_ttl_seconds,
        status=TaskStatus.DONE,
        stage=Stage.DONE,
        progress=100,
        text=result.text,
        duration=result.duration,
        sentences=result.sentences,
        applied_hotwords=result.hotwords,
        rtf=result.rtf,
        processing_time=result.processing_time,
        finished_at=utcnow(),
    )
    if done is not None:
        history.record(conn, history.jsonl_path(settings), done, settings.max_history_records)
        remember_result(conn, settings, done)
        if done.callback_url is not None:
            job_queue.enqueue_callback(conn, settings, task_id)
    with conn.pipeline(transaction=False) as pipe:  # one round trip for the job's counters
        stats.record_done(pipe, result.duration, result.processing_time)
        metrics.record_done(
            pipe,
            waited=metrics.elapsed(job.enqueued_at if job else None, record.started_at),
            processing=metrics.elapsed(record.started_at, done.finished_at if done else None),
            rtf=result.rtf,
            batch=pass_size,
        )
        pipe.execute()
    recordings.unpin(conn, record.file)
    enforce_retention(conn, settings)
    logger.info(
        f"{name} task={task_id} status=completed text_length={len(result.text)} "
        f"duration={result.duration:.2f}s rtf={result.rtf:.3f}"
    )
    return {"text": result.text, "duration": result.duration, "rtf": result.rtf}


def deliver_callback(task_id: str) -> bool:
    """RQ job on the callbacks queue: one signed POST of a finished task's result to its
    callback_url. A failure raises, and RQ's Retry runs it again after its back-off; the task
    itself stays as it finished."""
    ctx = current()
    job = get_current_job()
    conn: redis.Redis = job.connection if job else redis.Redis.from_url(ctx.settings.redis_dsn)
    return callbacks.deliver(conn, ctx.settings, task_id, ctx.name)


def remember_result(conn: redis.Redis, settings: Settings, done: TaskRecord) -> None:
    """Offer a done task's transcript to the result cache (src/results/cache.py). Set here, on
    the success path, rather than by the API at submit: only a finished transcription may ever
    be served, and its window starts when it finished. The entry lives no longer than the
    record it points to (TASK_TTL_SECONDS), since a hit needs that record."""
    if done.fingerprint is None or not settings.result_cache_seconds:
        return
    ttl = min(settings.result_cache_seconds, settings.task_ttl_seconds)
    result_cache.remember(conn, done.fingerprint, done.task_id, ttl)


def failure_reason(exc_type: type[BaseException], exc: BaseException) -> FailureReason:
    """What kind of failure this is, from a bounded set (the metrics' `reason` label)."""
    if isinstance(exc, EngineError) and isinstance(exc.__cause__, JobTimeoutException):
        return "timeout"  # the timeout fired inside the engine and was wrapped
    if issubclass(exc_type, JobTimeoutException):
        return "timeout"
    if isinstance(exc, AudioError):
        return "invalid_audio"
    if isinstance(exc, RecordingMissingError):
        return "recording_missing"
    if isinstance(exc, EngineError):
        return "engine_error"
    if exc_type.__name__ == "AbandonedJobError":
        return "abandoned"
    return "other"


def describe_failure(
    exc_type: type[BaseException], exc: BaseException, timeout: float | None
) -> str:
    """A message for the client: what went wrong, without paths or tracebacks."""
    if isinstance(exc, RecordingFetchError):
        return f"The worker could not fetch the recording from the API: {exc}"
    match failure_reason(exc_type, exc):
        case "timeout":
            return f"Processing timeout ({timeout}s exceeded)"
        case "invalid_audio":
            return f"Invalid audio: {exc}"
        case "recording_missing":
            return "The recording was deleted before it could be processed"
        case "engine_error":
            return f"Recognition failed: {exc}"
        case "abandoned":
            return "The worker stopped while processing this task"
        case _:
            return f"Recognition failed: {exc_type.__name__}"


def on_failure(
    job: Job,
    connection: redis.Redis,
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | Any,
) -> None:
    """RQ failure callback (exceptions, timeouts, abandoned jobs): mark the task failed.

    Unlike `process_task` it also runs without a worker context: RQ calls it for an abandoned job
    from whichever process cleans the registry, and the failure must be recorded all the same,
    so it then falls back to the environment's settings.
    """
    ctx = bound_or_none()
    settings = ctx.settings if ctx else get_settings()
    name = ctx.name if ctx else "rq"
    message = describe_failure(exc_type, exc, job.timeout)
    reason = failure_reason(exc_type, exc)
    mark_failed(connection, settings, job.id, message, reason=reason, enqueued_at=job.enqueued_at)
    exc_info = (exc_type, exc, tb) if isinstance(tb, TracebackType) else None
    logger.opt(exception=exc_info).error(f"{name} task={job.id} status=failed error={message}")
    enforce_retention(connection, settings)


def enforce_retention(conn: redis.Redis, settings: Settings) -> None:
    """Trim old recordings, on the host that keeps them. A worker on another host (WORKER_API_URL)
    leaves it to the API, which trims at every upload: from here it would drop index entries
    of files it cannot delete, and the API's disk would keep them for good."""
    if settings.worker_api_url is None:
        recordings.enforce_retention(conn, settings)
