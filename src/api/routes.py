"""HTTP routes under /api/v1: validate, call a service function, return a schema."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import FileResponse

from src.api.dependencies import QueueDep, RedisDep, SettingsDep, TaskId
from src.api.errors import APIError
from src.api.models import (
    DeleteResponse,
    ErrorResponse,
    HealthResponse,
    HistoryResponse,
    QueueStatusResponse,
    StatsResponse,
    SubmitResponse,
    TaskResult,
)
from src.asr.audio import SUPPORTED_FORMATS
from src.asr.hotwords import clean_hotwords, is_valid_hotword, parse_hotwords
from src.service import tasks
from src.utils import job_queue
from src.utils.file_handler import content_type

E = ErrorResponse

# Uploads are checked (PyAV decode) in threads; a few at a time keep the GIL free enough for the
# event loop, so /health and polling stay fast during a burst. More would not be faster: the work
# is CPU-bound.
SUBMIT_THREADS = 4


UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": E, "description": "Redis is unreachable"}
}
TASK_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": E, "description": "Unknown task"},
    422: {"model": E, "description": "Malformed task id"},
    **UNAVAILABLE,
}

asr = APIRouter(prefix="/asr", tags=["asr"])
system = APIRouter(tags=["system"])  # health: open, for load balancers and probes
stats_router = APIRouter(tags=["system"])


@asr.post(
    "/submit",
    response_model=SubmitResponse,
    summary="Submit a recording for transcription",
    description=(
        "Upload audio as multipart field `audio`. Accepted by content, not by name: "
        f"{', '.join(SUPPORTED_FORMATS)} (Telegram voice notes are OGG/Opus). "
        "Answers at once with a task id; poll `result_url`."
    ),
    responses={
        400: {"model": E, "description": "Not decodable audio (lists supported_formats)"},
        413: {"model": E, "description": "Upload or audio duration over the limit"},
        422: {"model": E, "description": "Invalid fields"},
        507: {"model": E, "description": "The server's disk is full"},
        **UNAVAILABLE,
    },
)
async def submit(
    request: Request,
    conn: RedisDep,
    queue: QueueDep,
    settings: SettingsDep,
    audio: Annotated[UploadFile, File(description="the recording")],
    language: Annotated[str, Form(description="language hint: zh, en or auto")] = "zh",
    batch_size: Annotated[
        int | None,
        Form(
            ge=1, le=3600, description="seconds of audio per model batch (default ASR_BATCH_SIZE)"
        ),
    ] = None,
    hotwords: Annotated[
        str | None,
        Form(description="extra hotwords for this request, separated by spaces or commas"),
    ] = None,
) -> dict[str, Any]:
    words = parse_hotwords(hotwords)
    invalid = [w for w in words if not is_valid_hotword(w)]
    if invalid:
        raise APIError(422, "Invalid hotwords", invalid=invalid[:20])
    body = await to_thread.run_sync(
        partial(
            tasks.submit,
            conn,
            queue,
            settings,
            audio.file,
            audio.filename,
            language,
            batch_size or settings.asr_batch_size,
            clean_hotwords(words),
        ),
        limiter=request.app.state.submit_limiter,
    )
    request.state.log = body.pop("_log")
    return body


@asr.get(
    "/result/{task_id}",
    response_model=TaskResult,
    response_model_exclude_none=True,
    summary="A task's state or result",
    responses=TASK_ERRORS,
)
def result(task_id: TaskId, conn: RedisDep, queue: QueueDep) -> dict[str, Any]:
    return tasks.view(conn, queue, task_id)


@asr.get(
    "/history",
    response_model=HistoryResponse,
    summary="Recently finished tasks",
    responses={422: {"model": E, "description": "`limit` out of range"}, **UNAVAILABLE},
)
def history(
    conn: RedisDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many records")] = 10,
) -> dict[str, Any]:
    return tasks.history_page(conn, limit)


@asr.get(
    "/audio/{task_id}",
    response_class=FileResponse,
    summary="Download the original recording",
    responses={
        200: {
            # mp4 uploads come back as video/mp4 (audio with a video track)
            "content": {"audio/*": {}, "video/mp4": {}},
            "description": "the uploaded bytes",
        },
        **TASK_ERRORS,
    },
)
def audio(task_id: TaskId, conn: RedisDep, settings: SettingsDep) -> FileResponse:
    path, download = tasks.find_audio(conn, settings, task_id)
    return FileResponse(path, media_type=content_type(path), filename=download)


@asr.get(
    "/queue/status",
    response_model=QueueStatusResponse,
    summary="Queue figures",
    responses=UNAVAILABLE,
)
def queue_status(conn: RedisDep, queue: QueueDep) -> dict[str, int]:
    return job_queue.queue_status(conn, queue)


@asr.post(
    "/retry/{task_id}",
    response_model=SubmitResponse,
    summary="Run a failed task again",
    responses={
        409: {"model": E, "description": "The task has not failed"},
        410: {"model": E, "description": "Its recording is gone"},
        **TASK_ERRORS,
    },
)
def retry(
    task_id: TaskId, conn: RedisDep, queue: QueueDep, settings: SettingsDep
) -> dict[str, Any]:
    return tasks.retry(conn, queue, settings, task_id)


@asr.delete(
    "/task/{task_id}",
    response_model=DeleteResponse,
    summary="Delete a task and its recording",
    responses=TASK_ERRORS,
)
def delete_task(task_id: TaskId, conn: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    return tasks.delete(conn, settings, task_id)


@system.get(
    "/health",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    summary="Readiness: Redis reachable and at least one worker with its model loaded",
    responses={503: {"model": HealthResponse, "description": "Not ready"}},
)
async def health(request: Request, response: Response) -> dict[str, Any]:
    code, body = await tasks.health(request.app.state.aredis, request.app.state.started)
    response.status_code = code
    return body


@stats_router.get(
    "/stats", response_model=StatsResponse, summary="Service statistics", responses=UNAVAILABLE
)
def service_stats(request: Request, conn: RedisDep, settings: SettingsDep) -> dict[str, Any]:
    return tasks.service_stats(conn, settings, request.app.state.started)
