"""The words every layer shares: a task's status, its stage, a sentence, and the history's status.

One module below everything else (it imports only pydantic), so the job core, the engine and the
API all name these values from one place; the JSON they write is the enums' string values.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


class TaskStatus(str, Enum):
    """A task's state in its Redis record and in /result."""

    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"


class Priority(str, Enum):
    """A task's priority lane, highest first; each lane is an RQ queue."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


class Stage(str, Enum):
    """Every stage a task record can show: the engine's pipeline steps (reported to a progress
    callback, in this order), then the two the job core writes itself."""

    DECODE = "decode"
    VAD = "vad"
    RECOGNITION = "recognition"
    PUNCTUATION = "punctuation"
    DONE = "done"
    # Written by dead-worker recovery: the task went back to the queue.
    REQUEUED = "requeued"
    # Written by dead-worker recovery when a task has killed too many workers.
    FAILED = "failed"


class HistoryStatus(str, Enum):
    """A history line's status: the design's jq examples select on "success", so a done task is
    "success" there rather than "done"."""

    SUCCESS = "success"
    FAILED = "failed"

    @classmethod
    def of(cls, status: TaskStatus) -> HistoryStatus:
        """The one place a task's status becomes a history status."""
        return cls.SUCCESS if status == TaskStatus.DONE else cls.FAILED


class Sentence(BaseModel):
    """One sentence of a transcript: the engine returns it, Redis stores it, /result shows it."""

    model_config = ConfigDict(frozen=True)

    text: str
    start: int = Field(description="ms from the start of the audio")
    end: int = Field(description="ms from the start of the audio")
