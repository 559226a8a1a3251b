"""Request and response schemas: what /docs and /redoc show, field by field, with examples."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from src.vocabulary import HistoryStatus, Sentence, Stage, TaskStatus


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


class SubmitResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "task_id": "2025-12-01_001_0a1b2c3d4e5f60718293a4b5",
                    "status": "queued",
                    "position": 3,
                    "estimated_wait": 45,
                    "result_url": "/api/v1/asr/result/2025-12-01_001_0a1b2c3d4e5f60718293a4b5",
                }
            ]
        }
    )

    task_id: str = Field(description="`YYYY-MM-DD_NNN_<random>`; use it to poll the result")
    status: TaskStatus = TaskStatus.QUEUED
    position: int | None = Field(
        None, description="1-based place in the queue (1 = next); null once a worker has it"
    )
    estimated_wait: int = Field(
        description="seconds until the result is expected, from observed processing speed"
    )
    result_url: str


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
    position: int | None = Field(None, description="1-based queue position while queued")
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
    attempts: int = 0


class WorkerInfo(BaseModel):
    name: str
    device: str | None = None
    models: dict[str, str] = Field(default_factory=dict, description="the engine's models by role")
    model_loaded: bool = True
    current_task: str | None = None


class HealthResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "model_loaded": True,
                    "redis_connected": True,
                    "workers_active": 2,
                    "uptime": "3 days 5 hours",
                }
            ]
        }
    )

    status: Literal["ready", "unavailable"]
    model_loaded: bool = Field(description="at least one worker has its model loaded")
    redis_connected: bool
    workers_active: int = 0
    uptime: str = Field(description="API uptime, human-readable")
    uptime_seconds: float = 0
    workers: list[WorkerInfo] = []
    error: str | None = None


class HistoryRecord(BaseModel):
    task_id: str
    filename: str | None = None
    text: str = ""
    created_at: datetime
    duration: float | None = None
    status: HistoryStatus
    error: str | None = None
    audio_url: str


class HistoryResponse(BaseModel):
    total: int = Field(description="records in the recent-history list")
    records: list[HistoryRecord]


class QueueStatusResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"queued": 3, "processing": 2, "failed": 1, "workers": 2, "workers_busy": 2}
            ]
        }
    )

    queued: int
    processing: int
    failed: int
    workers: int
    workers_busy: int


class DeleteResponse(BaseModel):
    task_id: str
    deleted: bool = True
    recording_deleted: bool


class StatsResponse(BaseModel):
    submitted: int
    done: int
    failed: int
    audio_seconds: float = Field(description="total audio transcribed, seconds")
    processing_seconds: float
    mean_rtf: float | None = Field(None, description="processing_seconds / audio_seconds")
    uptime: str
    uptime_seconds: float
    workers_active: int
    recordings: int
    storage_bytes: int = Field(description="recordings + logs on disk")
    history_write_errors: int = Field(
        0, description="finished tasks whose JSONL history line could not be written (disk full)"
    )
