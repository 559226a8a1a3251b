"""Request and response schemas: what /docs and /redoc show, field by field, with examples."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from src.records.task_store import CallbackAttempt
from src.results.history import HistoryEntry
from src.service.models import Deleted, Health, Queued, QueueFigures, ServiceStats, TaskView
from src.vocabulary import HistoryStatus, Priority, Sentence, Stage, TaskStatus


class ErrorResponse(BaseModel):
    """Every error has this shape: `error` says what went wrong; extra keys give context."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"error": "Task not found", "task_id": "2025-12-01_001_0a1b2c3d4e5f60718293a4b5"}
            ]
        },
    )

    error: str = Field(description="human-readable description of the problem")


class SubmitResponse(Queued):
    """`Queued`, with where to poll."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": "2025-12-01_001_0a1b2c3d4e5f60718293a4b5",
                    "status": "queued",
                    "position": 3,
                    "estimated_wait": 45,
                    "priority": "high",
                    "cached": False,
                    "result_url": "/api/v1/asr/result/2025-12-01_001_0a1b2c3d4e5f60718293a4b5",
                },
                {
                    "task_id": "2025-12-01_002_0a1b2c3d4e5f60718293a4b6",
                    "status": "done",
                    "position": 0,
                    "estimated_wait": 0,
                    "cached": True,
                    "result_url": "/api/v1/asr/result/2025-12-01_002_0a1b2c3d4e5f60718293a4b6",
                },
            ]
        }
    )

    result_url: str

    @classmethod
    def of(cls, queued: Queued, result_url: str) -> SubmitResponse:
        return cls(**queued.model_dump(), result_url=result_url)


class TaskResult(BaseModel):
    """A task's state; which fields are present depends on `status`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": "2025-12-01_001_0a1b2c3d4e5f60718293a4b5",
                    "status": "done",
                    "progress": 100,
                    "text": "今天天气很好。",
                    "duration": 3.52,
                    "sentences": [{"text": "今天天气很好。", "start": 380, "end": 3100}],
                    "created_at": "2025-12-01T10:00:00Z",
                    "audio_url": "/api/v1/asr/audio/2025-12-01_001_0a1b2c3d4e5f60718293a4b5",
                },
                {
                    "task_id": "2025-12-01_002_0a1b2c3d4e5f60718293a4b6",
                    "status": "processing",
                    "position": 0,
                    "progress": 40,
                    "stage": "recognition",
                },
                {
                    "task_id": "2025-12-01_003_0a1b2c3d4e5f60718293a4b7",
                    "status": "failed",
                    "error": "Processing timeout (600s exceeded)",
                    "retry_url": "/api/v1/asr/retry/2025-12-01_003_0a1b2c3d4e5f60718293a4b7",
                },
            ]
        }
    )

    task_id: str
    status: TaskStatus
    progress: int = Field(0, ge=0, le=100, description="0-100, reported by the worker")
    stage: Stage | None = Field(None, description="the step the task is in or ended at")
    position: int | None = Field(
        None,
        ge=0,
        description="place in line: n >= 1 while `queued` (1 = next), 0 while `processing`",
    )
    filename: str | None = Field(None, description="the uploaded file's name")
    language: str | None = None
    text: str | None = Field(None, description="the transcript (done)")
    duration: float | None = Field(None, description="audio length in seconds")
    sentences: list[Sentence] | None = Field(None, description="sentences with timestamps (done)")
    hotwords: list[str] | None = Field(None, description="hotwords applied (done)")
    rtf: float | None = Field(None, description="real-time factor: processing time / duration")
    created_at: datetime = Field(description="submission time, ISO-8601 UTC")
    started_at: datetime | None = None
    finished_at: datetime | None = None
    audio_url: str | None = None
    error: str | None = Field(None, description="why it failed (failed)")
    retry_url: str | None = Field(None, description="POST here to run it again (failed)")
    estimated_wait: float | None = Field(
        None, description="seconds until it should be done, as submit estimates it (queued)"
    )
    attempts: int = 0
    priority: Priority = Field(
        Priority.NORMAL,
        description="its lane: the one it waits in now while queued (a job moves up a lane "
        "each LANE_PROMOTE_SECONDS it waits), else the one it was submitted to",
    )
    cached: bool = Field(
        False,
        description="true: done at submit with the transcript of an earlier task for the same "
        "audio, language, hotwords and model (the result cache); no worker ran it",
    )
    callback_attempts: list[CallbackAttempt] | None = Field(
        None,
        description="the completion webhook's delivery attempts, newest last (only with a "
        "`callback_url`)",
    )

    @classmethod
    def of(cls, view: TaskView, audio_url: str, retry_url: str) -> TaskResult:
        """Shaped by status: the transcript once done, the error and retry URL once failed."""
        record = view.record
        body = cls(
            task_id=record.task_id,
            status=record.status,
            progress=record.progress,
            stage=record.stage,
            filename=record.filename,
            language=record.language,
            created_at=record.created_at,
            attempts=record.attempts,
            audio_url=audio_url,
            position=view.position,
            priority=view.lane or record.priority,
            cached=record.cached,
        )
        if record.callback_url is not None:
            body.callback_attempts = record.callback_attempts
        if record.status == TaskStatus.PROCESSING:
            body.started_at = record.started_at
        elif record.status == TaskStatus.DONE:
            body.text = record.text
            body.duration = record.duration
            body.sentences = record.sentences
            body.hotwords = record.applied_hotwords
            body.rtf = record.rtf
            body.started_at = record.started_at
            body.finished_at = record.finished_at
        elif record.status == TaskStatus.FAILED:
            body.error = record.error
            body.retry_url = retry_url
            body.duration = record.audio_duration
            body.finished_at = record.finished_at
        else:  # queued: its place in line and how long until it should be done
            body.duration = record.audio_duration
            body.estimated_wait = view.estimated_wait
        return body


_FIRST_RUN_ERROR = (
    "ASR_MODEL iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch "
    "not found in /root/.cache/modelscope/hub: run "
    "`uv run --extra engine python scripts/download_models.py` (or set it to a local model "
    "directory)"
)


class HealthResponse(Health):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "model_loaded": True,
                    "redis_connected": True,
                    "workers_active": 2,
                    "uptime": "3 days 5 hours",
                },
                {
                    "status": "unavailable",
                    "model_loaded": False,
                    "redis_connected": True,
                    "workers_active": 0,
                    "uptime": "0 minutes",
                    "workers_starting": [
                        {
                            "name": "worker-1",
                            "state": "failed",
                            "error": _FIRST_RUN_ERROR,
                            "attempts": 3,
                            "since": "2025-12-01T10:00:00Z",
                            "retry_at": "2025-12-01T10:00:07Z",
                            "pid": 4242,
                            "hostname": "asr-box",
                        }
                    ],
                    "error": f"worker-1: {_FIRST_RUN_ERROR}",
                },
            ]
        }
    )


class HistoryRecord(BaseModel):
    task_id: str
    filename: str | None = None
    text: str = ""
    created_at: datetime
    duration: float | None = None
    status: HistoryStatus
    error: str | None = None
    cached: bool = Field(False, description="answered from the result cache")
    audio_url: str

    @classmethod
    def of(cls, entry: HistoryEntry, audio_url: str) -> HistoryRecord:
        return cls.model_validate({**entry.model_dump(), "audio_url": audio_url})


class HistoryResponse(BaseModel):
    total: int = Field(description="records in the recent-history list")
    records: list[HistoryRecord]


class QueueStatusResponse(QueueFigures):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"queued": 3, "processing": 2, "failed": 1, "workers": 2, "workers_busy": 2}
            ]
        }
    )


class DeleteResponse(Deleted):
    pass


class StatsResponse(ServiceStats):
    pass
