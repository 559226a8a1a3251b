"""The refusals a use case can raise, named for what happened rather than for an HTTP status.

The service layer knows no HTTP: `src/api/errors.py` maps each class to its status in one table.
Each error carries the keys its JSON error shows beside `"error"`, as dataclass fields in the
order the body lists them; `str(error)` is the `"error"` text itself.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, ClassVar


@dataclass(eq=False)  # eq would make the exception unhashable
class ServiceError(Exception):
    """Base of the domain errors: a message for the client and the context keys behind it."""

    message: ClassVar[str] = "Request refused"

    def __str__(self) -> str:
        return self.message

    def context(self) -> dict[str, Any]:
        """The keys the client gets beside `"error"`: every field, in declaration order."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(eq=False)
class TaskNotFound(ServiceError):
    """No task and no stored recording under this id (never submitted, expired or deleted)."""

    message: ClassVar[str] = "Task not found"
    task_id: str


@dataclass(eq=False)
class TaskNotFailed(ServiceError):
    """A retry of a task that is queued, processing or done: only a failure may run again."""

    message: ClassVar[str] = "Only a failed task can be retried"
    task_id: str
    status: str


@dataclass(eq=False)
class RecordingGone(ServiceError):
    """A retry whose recording retention already removed: there is nothing to run again."""

    message: ClassVar[str] = "The recording is no longer stored; submit it again"
    task_id: str


@dataclass(eq=False)
class RecordingNotFound(ServiceError):
    """A download of a recording that is not (or no longer) in the recordings directory."""

    message: ClassVar[str] = "Recording not found"
    task_id: str


@dataclass(eq=False)
class IdempotencyConflict(ServiceError):
    """An Idempotency-Key its first request used with another upload or other options: that
    request's task stands (`task_id`), and this one is not run."""

    message: ClassVar[str] = (
        "This Idempotency-Key was used for a different request (another file or other options); "
        "send a new key for a new request"
    )
    task_id: str


@dataclass(eq=False)
class UnsupportedLanguage(ServiceError):
    """A language hint outside ASR_LANGUAGES; the answer lists the accepted ones."""

    message: ClassVar[str] = "Unsupported language"
    supported_languages: list[str]


@dataclass(eq=False)
class UploadTooLarge(ServiceError):
    """The upload passed MAX_UPLOAD_BYTES while it was stored."""

    message: ClassVar[str] = "File too large"
    max_bytes: int


@dataclass(eq=False)
class StorageFull(ServiceError):
    """The disk filled while the upload was stored; the partial file is gone."""

    message: ClassVar[str] = "Insufficient storage: the server's disk is full"


@dataclass(eq=False)
class AudioTooLong(ServiceError):
    """Decodable audio over ASR_MAX_AUDIO_SECONDS. The decoder's own sentence, which names the
    clip's length and the limit, is the client's message, so it is not a context key."""

    description: str
    reason: str = "too_long"

    def __str__(self) -> str:
        return self.description

    def context(self) -> dict[str, Any]:
        return {"reason": self.reason}


@dataclass(eq=False)
class InvalidAudio(ServiceError):
    """Content that is not decodable audio; `reason` is AudioError's, for clients to branch on."""

    message: ClassVar[str] = "Invalid file format"
    detail: str
    reason: str
    supported_formats: list[str]


@dataclass(eq=False)
class TaskNotDone(ServiceError):
    """A transcript export (SRT, VTT, text) of a task that is queued, processing or failed."""

    message: ClassVar[str] = "The task has no transcript yet; only a done task can be exported"
    task_id: str
    status: str


@dataclass(eq=False)
class TranscriptionFailed(ServiceError):
    """A synchronous transcription whose task failed; `detail` is the task's own error."""

    message: ClassVar[str] = "Transcription failed"
    task_id: str
    detail: str


@dataclass(eq=False)
class TranscriptionTimeout(ServiceError):
    """A synchronous transcription still unfinished when the wait ran out. The task goes on:
    the client can fetch its result from the native API with `task_id`."""

    task_id: str
    status: str
    waited_seconds: float

    def __str__(self) -> str:
        return (
            f"The transcription did not finish within {self.waited_seconds:g} s and is still "
            f"{self.status}; it goes on: fetch its result later with task id {self.task_id}"
        )


@dataclass(eq=False)
class CallbacksNotConfigured(ServiceError):
    """A `callback_url` while CALLBACK_SECRET is unset: an unsigned callback could be forged by
    anyone who can reach the receiver, so the service sends none."""

    message: ClassVar[str] = "Callbacks are not configured on this server (CALLBACK_SECRET)"


@dataclass(eq=False)
class CallbackRefused(ServiceError):
    """A `callback_url` the SSRF guard refuses (src/service/callbacks.py): `reason` says why."""

    message: ClassVar[str] = "callback_url refused"
    reason: str
