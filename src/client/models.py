"""What the service answers, as the client sees it: its own small models, not the server's, so
the client never imports the server (and tolerates fields a newer server adds)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["queued", "processing", "done", "failed"]


class Sentence(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str
    start: int  # milliseconds
    end: int


class Task(BaseModel):
    """A task's state: the submit answer, a result, or a WebSocket message."""

    model_config = ConfigDict(extra="ignore")

    task_id: str
    status: Status
    position: int | None = None
    estimated_wait: float | None = None
    progress: int = 0
    stage: str | None = None
    cached: bool = False
    text: str | None = None
    sentences: list[Sentence] | None = None
    duration: float | None = None
    error: str | None = None
    retry_url: str | None = None
    result_url: str | None = None
    created_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def settled(self) -> bool:
        """Done or failed: nothing changes any more unless it is retried."""
        return self.status in ("done", "failed")


class HistoryItem(BaseModel):
    model_config = ConfigDict(extra="ignore")

    task_id: str
    status: str
    filename: str | None = None
    text: str = ""
    duration: float | None = None
    error: str | None = None
    cached: bool = False
    created_at: datetime


class ASRError(Exception):
    """The service answered with an error: its HTTP status and its JSON body (`error` says
    why; other keys give context, e.g. `task_id`, `supported_languages`)."""

    def __init__(self, status_code: int, body: dict[str, Any]) -> None:
        self.status_code = status_code
        self.body = body
        self.error = str(body.get("error", "")) or f"HTTP {status_code}"
        super().__init__(f"{status_code}: {self.error}")


class ServiceUnavailable(ASRError):
    """503: the queue (Redis) is unreachable, or no worker is ready. Try again later."""
