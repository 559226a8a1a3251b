"""What the use cases take and return: typed, and free of HTTP.

The API's response models (src/api/models.py) extend these with what only HTTP knows: the URLs
the router builds, and the examples Swagger shows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from pydantic import BaseModel, Field

from src.records.task_store import TaskRecord
from src.records.worker_start import WorkerStart
from src.results.history import HistoryEntry
from src.vocabulary import Priority, TaskStatus


@dataclass(frozen=True)
class SubmitRequest:
    """One upload as the client sent it; hotwords already parsed and checked by the API."""

    upload: BinaryIO
    filename: str | None
    language: str
    batch_size: int
    hotwords: list[str]
    # The client's Idempotency-Key header, if any (src/service/dedup.py).
    idempotency_key: str | None = None
    # The lane; None: chosen by the audio's duration (src/queue/job_queue.py `lane_for`).
    priority: Priority | None = None
    # Where to POST the final result (src/service/callbacks.py), if anywhere.
    callback_url: str | None = None


class Queued(BaseModel):
    """A task waiting for a worker (submit, retry): where it stands and how long it should take."""

    task_id: str = Field(description="`YYYY-MM-DD_NNN_<random>`; use it to poll the result")
    status: TaskStatus = TaskStatus.QUEUED
    position: int = Field(
        ge=0,
        description=(
            "place in line: n >= 1 while `queued` (1 = next), 0 once a worker has the job "
            "(status `processing`) or the task is finished"
        ),
    )
    estimated_wait: int = Field(
        description="seconds until the result is expected, from observed processing speed"
    )
    priority: Priority | None = Field(
        None,
        description=(
            "the lane it waits in (workers take high, then normal, then low; a job moves up a "
            "lane each LANE_PROMOTE_SECONDS it waits); absent once a worker has it"
        ),
    )
    cached: bool = Field(
        False,
        description=(
            "true: the same audio with the same language, hotwords and model was transcribed "
            "recently, and this task is `done` at once with that result (never queued)"
        ),
    )


class Submitted(Queued):
    """`Queued`, plus what the access log line names: the upload's display name and size."""

    filename: str = Field(exclude=True)
    size: int = Field(exclude=True)
    # An Idempotency-Key's resend: the task of the key's first request, nothing new created.
    replayed: bool = Field(False, exclude=True)

    def log_line(self) -> str:
        line = (
            f"task={self.task_id} file={self.filename} size={self.size / 1e6:.2f}MB "
            f"status={self.status.value}"
        )
        if self.cached:
            line += " cached=true"
        if self.replayed:
            line += " replayed=true"
        return line


@dataclass(frozen=True)
class TaskView:
    """A task's record and its position: n >= 1 while queued, 0 while a worker has it."""

    record: TaskRecord
    position: int | None = None
    estimated_wait: float | None = None  # seconds until it should be done, while queued
    lane: Priority | None = None  # the lane it waits in now (promotion may have moved it up)

    @property
    def settled(self) -> bool:
        """Done or failed: nothing more will change until a retry."""
        return self.record.status in (TaskStatus.DONE, TaskStatus.FAILED)


class Deleted(BaseModel):
    task_id: str
    deleted: bool = True
    recording_deleted: bool


@dataclass(frozen=True)
class Recording:
    """A stored upload to send back: its path, and the name the client should save it under."""

    path: Path
    download_name: str


@dataclass(frozen=True)
class HistoryPage:
    total: int
    entries: list[HistoryEntry]


class WorkerInfo(BaseModel):
    """A worker's readiness beacon as /health shows it."""

    name: str
    hostname: str | None = Field(None, description="the host it runs on (workers may be on many)")
    device: str | None = Field(None, description="where its engine runs: cpu, or cuda:N")
    gpu: str | None = Field(None, description="the GPU's name when it runs on one")
    models: dict[str, str] = Field(default_factory=dict, description="the engine's models by role")
    model_loaded: bool = True
    current_task: str | None = None


class Health(BaseModel):
    status: Literal["ready", "unavailable"] = "unavailable"
    model_loaded: bool = Field(False, description="at least one worker has its model loaded")
    redis_connected: bool = False
    workers_active: int = 0
    uptime: str = Field(description="API uptime, human-readable")
    uptime_seconds: float = 0
    workers: list[WorkerInfo] = []
    workers_starting: list[WorkerStart] = Field(
        [], description="workers with no engine loaded yet: loading it, or why they cannot"
    )
    error: str | None = Field(
        None, description="why not ready: Redis, or each starting worker's reason"
    )


class QueueFigures(BaseModel):
    queued: int = Field(description="jobs waiting, all lanes together")
    processing: int
    failed: int
    workers: int
    workers_busy: int
    lanes: dict[Priority, int] = Field(
        default_factory=dict, description="jobs waiting in each priority lane"
    )


class ServiceStats(BaseModel):
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
    cached: int = Field(
        0, description="uploads answered from the result cache (not counted in `done`)"
    )
