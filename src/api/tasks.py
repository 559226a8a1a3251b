"""RQ job functions. They run inside a worker process (see src/asr/worker.py), never in the API.

The API enqueues them by dotted path ("src.api.tasks.transcribe"), so importing the API does not
import this module, the recognizer, torch or FunASR.
"""

from __future__ import annotations

import gc
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from loguru import logger
from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from src.asr.audio import AudioError
from src.asr.config import get_settings
from src.asr.recognizer import (
    ProgressFn,
    RecognitionError,
    SpeechRecognizer,
    Stage,
    Transcript,
)
from src.asr.worker import get_recognizer, worker_name
from src.utils import file_handler, history, stats, task_store
from src.utils.recovery import mark_failed
from src.utils.task_store import SentenceRecord, TaskRecord, TaskStatus, utcnow

# Write progress to Redis only when it moved this many points (or the stage changed).
PROGRESS_STEP = 5
OOM_BATCH_DIVISOR = 4


class RecordingMissingError(FileNotFoundError):
    """The task's recording was deleted before a worker reached it."""


def _progress_writer(conn: redis.Redis, task_id: str) -> Any:
    last = {"stage": None, "pct": -PROGRESS_STEP}

    def report(stage: Stage, fraction: float) -> None:
        # Never backwards, even when an out-of-memory retry starts the stages again.
        pct = max(1, min(99, int(fraction * 100)), int(last["pct"]))
        if stage.value == last["stage"] and pct - last["pct"] < PROGRESS_STEP:
            return
        last.update(stage=stage.value, pct=pct)
        task_store.update(conn, task_id, progress=pct, stage=stage.value)
        logger.debug(f"{worker_name()} task={task_id} stage={stage.value} progress={pct}")

    return report


def recognize_with_oom_retry(
    recognizer: SpeechRecognizer, path: Path, record: TaskRecord, progress: ProgressFn
) -> Transcript:
    """Out of memory usually means the batch was too big: try once more with a quarter of it."""
    try:
        return recognizer.recognize(
            path,
            language=record.language,
            batch_size_s=record.batch_size,
            hotwords=record.hotwords,
            progress=progress,
        )
    except RecognitionError as exc:
        if not exc.out_of_memory:
            raise
        smaller = max(1, record.batch_size // OOM_BATCH_DIVISOR)
        logger.warning(
            f"{worker_name()} task={record.task_id} out of memory at batch_size={record.batch_size}"
            f"s; retrying once at {smaller}s"
        )
        gc.collect()
        return recognizer.recognize(
            path,
            language=record.language,
            batch_size_s=smaller,
            hotwords=record.hotwords,
            progress=progress,
        )


def transcribe(task_id: str) -> dict[str, Any]:
    """Transcribe one stored recording and publish the result, history line and counters."""
    settings = get_settings()
    job = get_current_job()
    conn: redis.Redis = job.connection if job else redis.Redis.from_url(settings.redis_dsn)
    record = task_store.load(conn, task_id)
    if record is None:
        logger.warning(f"{worker_name()} task={task_id} skipped: task was deleted")
        return {"skipped": True}
    record = task_store.update(
        conn,
        task_id,
        status=TaskStatus.PROCESSING,
        stage=Stage.DECODE.value,
        progress=1,
        started_at=utcnow(),
        worker_id=worker_name(),
        attempts=record.attempts + 1,
        error=None,
    )
    if record is None:
        return {"skipped": True}
    path = file_handler.recording_path(settings, record.file)
    if path is None:
        raise RecordingMissingError(f"recording {record.file} no longer exists")
    logger.info(
        f"{worker_name()} task={task_id} status=started file={record.file} "
        f"language={record.language} batch_size={record.batch_size}"
    )
    transcript = recognize_with_oom_retry(
        get_recognizer(), path, record, _progress_writer(conn, task_id)
    )
    for sentence in transcript.sentences:
        logger.debug(
            f"{worker_name()} task={task_id} segment {sentence.start_ms}-{sentence.end_ms}ms "
            f"text_length={len(sentence.text)}"
        )
    done = task_store.update(
        conn,
        task_id,
        ttl=settings.task_ttl_seconds,
        status=TaskStatus.DONE,
        stage=Stage.DONE.value,
        progress=100,
        text=transcript.text,
        duration=transcript.duration,
        sentences=[
            SentenceRecord(text=s.text, start=s.start_ms, end=s.end_ms)
            for s in transcript.sentences
        ],
        applied_hotwords=transcript.hotwords,
        rtf=transcript.rtf,
        processing_time=transcript.processing_time,
        finished_at=utcnow(),
    )
    if done is not None:
        history.record(conn, settings.history_file, done, settings.max_history_records)
    stats.record_done(conn, transcript.duration, transcript.processing_time)
    file_handler.enforce_retention(conn, settings)
    logger.info(
        f"{worker_name()} task={task_id} status=completed text_length={len(transcript.text)} "
        f"duration={transcript.duration:.2f}s rtf={transcript.rtf:.3f}"
    )
    return {"text": transcript.text, "duration": transcript.duration, "rtf": transcript.rtf}


def describe_failure(exc_type: type[BaseException], exc: BaseException, timeout: int | None) -> str:
    """A message for the client: what went wrong, without paths or tracebacks."""
    if isinstance(exc, RecognitionError) and isinstance(exc.__cause__, JobTimeoutException):
        exc_type = JobTimeoutException  # the timeout fired inside FunASR and was wrapped
    if issubclass(exc_type, JobTimeoutException):
        return f"Processing timeout ({timeout}s exceeded)"
    if isinstance(exc, AudioError):
        return f"Invalid audio: {exc}"
    if isinstance(exc, RecordingMissingError):
        return "The recording was deleted before it could be processed"
    if isinstance(exc, RecognitionError):
        return f"Recognition failed: {exc}"
    if exc_type.__name__ == "AbandonedJobError":
        return "The worker stopped while processing this task"
    return f"Recognition failed: {exc_type.__name__}"


def on_failure(
    job: Job,
    connection: redis.Redis,
    exc_type: type[BaseException],
    exc: BaseException,
    tb: TracebackType | Any,
) -> None:
    """RQ failure callback (exceptions, timeouts, abandoned jobs): mark the task failed."""
    settings = get_settings()
    message = describe_failure(exc_type, exc, job.timeout)
    mark_failed(connection, settings, job.id, message)
    exc_info = (exc_type, exc, tb) if isinstance(tb, TracebackType) else None
    logger.opt(exception=exc_info).error(
        f"{worker_name()} task={job.id} status=failed error={message}"
    )
    file_handler.enforce_retention(connection, settings)
