"""HTTP routes under /api/v1: validate, call a service function, return a schema."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile, WebSocket
from fastapi.responses import FileResponse
from starlette.requests import HTTPConnection
from starlette.responses import MalformedRangeHeader, RangeNotSatisfiable

from src.api import errors
from src.api.dependencies import (
    EventsDep,
    LanesDep,
    RedisDep,
    SettingsDep,
    TaskId,
    get_events,
    get_redis,
    get_rq_lanes,
    key_accepted,
    valid_task_id,
    websocket_key,
)
from src.api.exports import FILE_CONTENT, ExportFormat, transcript_file
from src.api.forms import request_hotwords
from src.api.models import (
    DeleteResponse,
    ErrorResponse,
    HealthResponse,
    HistoryRecord,
    HistoryResponse,
    QueueStatusResponse,
    StatsResponse,
    SubmitResponse,
    TaskResult,
)
from src.api.sockets import until_disconnect
from src.asr.hotwords import MAX_HOTWORDS
from src.media.audio import SUPPORTED_FORMATS
from src.service import status, tasks, transcripts
from src.service.models import Deleted, Health, QueueFigures, ServiceStats, SubmitRequest
from src.service.submit import submit as submit_upload
from src.uploads.recordings import content_type
from src.vocabulary import Priority

E = ErrorResponse

# Uploads are checked (PyAV decode) in threads; a few at a time keep the GIL free enough for the
# event loop, so /health and polling stay fast during a burst. More would not be faster: the work
# is CPU-bound.
SUBMIT_THREADS = 4
# The submit form's fields; each may be sent once (FastAPI alone would keep the last silently).
SUBMIT_FIELDS = ("audio", "language", "batch_size", "hotwords", "priority", "callback_url")
# The longest long poll: under common proxies' 60-100 s idle timeouts.
MAX_WAIT_S = 60.0
# An Idempotency-Key: 1-255 visible ASCII characters (no spaces, no control characters).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"


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
push = APIRouter(prefix="/asr", tags=["asr"])  # WebSockets: the key is checked in the route
stats_router = APIRouter(tags=["system"])


def url(conn: HTTPConnection, route: str, task_id: str) -> str:
    """A task's URL as the router builds it (path only, as the design's examples show)."""
    return str(conn.app.url_path_for(route, task_id=task_id))


@asr.post(
    "/submit",
    response_model=SubmitResponse,
    summary="Submit a recording for transcription",
    description=(
        "Upload audio as multipart field `audio`. Accepted by content, not by name: "
        f"{', '.join(SUPPORTED_FORMATS)} (Telegram voice notes are OGG/Opus). "
        "Answers at once with a task id; poll `result_url`.\n\n"
        "**Result cache.** The same audio (byte for byte) with the same language, hotwords and "
        "model as a task done within `RESULT_CACHE_SECONDS` is not transcribed again: the answer "
        "is a new task, already `done` with that transcript, and `cached: true`.\n\n"
        "**Idempotency.** Send an `Idempotency-Key` header to make a resend safe: within "
        "`IDEMPOTENCY_SECONDS` the same key returns the task its first request created (header "
        "`Idempotent-Replayed: true`), however often the body is sent again. The same key with "
        "another file or other options is a 409.\n\n"
        "**Completion webhook.** With `callback_url` (and `CALLBACK_SECRET` configured) the "
        "final result (done or failed) is POSTed there as JSON, signed: `X-ASR-Signature: "
        "sha256=<hex>` is HMAC-SHA256 over `<X-ASR-Timestamp>.<body>`. Failed deliveries are "
        "retried with exponential back-off (`CALLBACK_RETRY_INTERVALS`); each attempt is listed "
        "in the task's `callback_attempts`."
    ),
    responses={
        200: {
            "description": "The task: queued, or `done` at once when answered from the cache",
            "headers": {
                "Idempotent-Replayed": {
                    "description": "`true` when an Idempotency-Key resend returned the task of "
                    "its first request",
                    "schema": {"type": "string", "enum": ["true"]},
                }
            },
        },
        400: {"model": E, "description": "Not decodable audio (lists supported_formats)"},
        409: {
            "model": E,
            "description": "The Idempotency-Key was used for a different request (names its "
            "`task_id`)",
        },
        413: {"model": E, "description": "Upload or audio duration over the limit"},
        422: {
            "model": E,
            "description": f"Invalid fields, a field sent twice, over {MAX_HOTWORDS} hotwords, "
            "or a `callback_url` refused (callbacks not configured, or the SSRF guard)",
        },
        507: {"model": E, "description": "The server's disk is full"},
        **UNAVAILABLE,
    },
)
async def submit(
    request: Request,
    response: Response,
    conn: RedisDep,
    lanes: LanesDep,
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
        Form(
            description="extra hotwords for this request, separated by spaces or commas; at most "
            f"{MAX_HOTWORDS} distinct (422 beyond). With the configured file's words they are "
            f"capped at {MAX_HOTWORDS} in all, the file's first; the result lists those applied"
        ),
    ] = None,
    priority: Annotated[
        Priority | None,
        Form(
            description="the lane: workers always take high, then normal, then low. Default by "
            "duration: under LANE_HIGH_MAX_SECONDS (60 s) high, from LANE_LOW_MIN_SECONDS "
            "(600 s) low, else normal. A job moves up a lane each LANE_PROMOTE_SECONDS (300 s) "
            "it waits, so none starves"
        ),
    ] = None,
    callback_url: Annotated[
        str | None,
        Form(
            max_length=2048,
            description="http(s) URL to POST the final result to when the task is done or "
            "failed, signed with CALLBACK_SECRET (422 when unset). SSRF guard: link-local, "
            "metadata, multicast and unspecified addresses are refused, private ranges unless "
            "CALLBACK_ALLOW_PRIVATE, loopback only while CALLBACK_ALLOW_LOOPBACK (the default)",
            examples=["http://127.0.0.1:8081/asr-done"],
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            pattern=IDEMPOTENCY_KEY_PATTERN,
            description="any unique string of up to 255 visible ASCII characters (a UUID, or "
            "the bot's update id). A resend with the same key within IDEMPOTENCY_SECONDS returns "
            "the same task instead of creating another; the same key with another file or other "
            "options is a 409. Keys are per API key",
            examples=["tg-update-918273645"],
        ),
    ] = None,
) -> SubmitResponse:
    form = await request.form()  # already parsed by FastAPI: this is its cached copy
    repeated = {name: n for name in SUBMIT_FIELDS if (n := len(form.getlist(name))) > 1}
    if repeated:
        raise errors.repeated_fields(repeated)
    wanted = request_hotwords(hotwords)
    upload = SubmitRequest(
        upload=audio.file,
        filename=audio.filename,
        language=language,
        batch_size=batch_size or settings.asr_batch_size,
        hotwords=wanted,
        idempotency_key=idempotency_key,
        priority=priority,
        callback_url=callback_url or None,
    )
    submitted = await to_thread.run_sync(
        submit_upload, conn, lanes, settings, upload, limiter=request.app.state.submit_limiter
    )
    request.state.log = submitted.log_line()  # the access line names the task it created
    if submitted.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return SubmitResponse.of(submitted, url(request, "result", submitted.task_id))


@asr.get(
    "/result/{task_id}",
    response_model=TaskResult,
    response_model_exclude_none=True,
    summary="A task's state or result, or its transcript as a file",
    responses={
        200: {"content": FILE_CONTENT, "description": "the state (json) or the transcript file"},
        409: {"model": E, "description": "`format` is a file and the task is not done"},
        **TASK_ERRORS,
    },
)
async def result(
    request: Request,
    task_id: TaskId,
    conn: RedisDep,
    lanes: LanesDep,
    hub: EventsDep,
    fmt: Annotated[
        ExportFormat,
        Query(
            alias="format",
            description="`json`: the task's state and result. `txt`, `srt` (SubRip), `vtt` "
            "(WebVTT): a done task's transcript as a UTF-8 file, one cue per sentence",
        ),
    ] = "json",
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            description="Long poll: answer as soon as the task is `done` or `failed`, or after "
            "this many seconds with its state then. 0 answers at once",
        ),
    ] = 0,
) -> TaskResult | Response:
    view = await tasks.view_settled(hub, conn, lanes, task_id, wait)
    if fmt != "json":
        record = await to_thread.run_sync(transcripts.finished, conn, task_id)
        return transcript_file(record, fmt, attach_name=True)
    return TaskResult.of(view, url(request, "audio", task_id), url(request, "retry", task_id))


@asr.get(
    "/history",
    response_model=HistoryResponse,
    summary="Recently finished tasks",
    responses={422: {"model": E, "description": "`limit` out of range"}, **UNAVAILABLE},
)
def history(
    request: Request,
    conn: RedisDep,
    limit: Annotated[int, Query(ge=1, le=1000, description="how many records")] = 10,
) -> HistoryResponse:
    page = status.history_page(conn, limit)
    records = [HistoryRecord.of(e, url(request, "audio", e.task_id)) for e in page.entries]
    return HistoryResponse(total=page.total, records=records)


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
        206: {"description": "the bytes a `Range: bytes=...` header asked for"},
        400: {"model": E, "description": "Malformed `Range` header"},
        416: {"model": E, "description": "`Range` starts past the end (`Content-Range` has size)"},
        **TASK_ERRORS,
    },
)
def audio(task_id: TaskId, conn: RedisDep, settings: SettingsDep) -> FileResponse:
    found = tasks.find_audio(conn, settings, task_id)
    return RecordingResponse(
        found.path, media_type=content_type(found.path.name), filename=found.download_name
    )


class RecordingResponse(FileResponse):
    """Starlette's FileResponse, whose Range errors come out as our JSON errors instead of a
    plain-text 400 and an empty 416: its own parser decides, so the two never disagree."""

    @classmethod
    def _parse_range_header(cls, http_range: str, file_size: int) -> list[tuple[int, int]]:
        unit = http_range.split("=", 1)[0].strip().lower()
        if "=" in http_range and unit != "bytes":
            return []  # RFC 9110 14.2: a range unit the server does not know is ignored
        try:
            return super()._parse_range_header(http_range, file_size)
        except MalformedRangeHeader as exc:
            raise errors.bad_range(exc.content) from exc
        except RangeNotSatisfiable as exc:
            raise errors.range_not_satisfiable(exc.max_size) from exc


@asr.get(
    "/queue/status",
    response_model=QueueStatusResponse,
    summary="Queue figures",
    responses=UNAVAILABLE,
)
def queue_status(conn: RedisDep, lanes: LanesDep) -> QueueFigures:
    return status.queue_figures(conn, lanes)


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
    request: Request, task_id: TaskId, conn: RedisDep, lanes: LanesDep, settings: SettingsDep
) -> SubmitResponse:
    queued = tasks.retry(conn, lanes, settings, task_id)
    return SubmitResponse.of(queued, url(request, "result", task_id))


@asr.delete(
    "/task/{task_id}",
    response_model=DeleteResponse,
    summary="Delete a task and its recording",
    responses=TASK_ERRORS,
)
def delete_task(task_id: TaskId, conn: RedisDep, settings: SettingsDep) -> Deleted:
    return tasks.delete(conn, settings, task_id)


@system.get(
    "/health",
    response_model=HealthResponse,
    response_model_exclude_none=True,
    summary="Readiness: Redis reachable and at least one worker with its model loaded",
    responses={503: {"model": HealthResponse, "description": "Not ready"}},
)
async def health(request: Request, response: Response) -> Health:
    body = await status.health(request.app.state.aredis, request.app.state.started)
    response.status_code = 200 if body.status == "ready" else 503
    return body


@stats_router.get(
    "/stats", response_model=StatsResponse, summary="Service statistics", responses=UNAVAILABLE
)
def service_stats(request: Request, conn: RedisDep, settings: SettingsDep) -> ServiceStats:
    return status.service_stats(conn, settings, request.app.state.started)


@push.websocket("/ws/{task_id}", name="task_events")
async def task_events(websocket: WebSocket, task_id: str) -> None:
    """The task's state at once, then one message per change, closed after done or failed.

    Each message is what `GET /result/{task_id}` would answer then. Close codes: 1000 after the
    last state; 4401 without the API key; 4422 for a malformed id; 4404 for an unknown (or
    deleted) task; 1013 while Redis is unreachable.
    """
    await websocket.accept()
    try:
        if not key_accepted(websocket.app.state.settings, websocket_key(websocket)):
            raise errors.APIError(401, "Missing or invalid API key")
        await valid_task_id(task_id)
        conn = await get_redis(websocket)
        lanes = await get_rq_lanes(conn, websocket.app.state.settings)
        changes = tasks.follow(await get_events(websocket), conn, lanes, task_id)
        audio, retry = url(websocket, "audio", task_id), url(websocket, "retry", task_id)
        sent = await until_disconnect(websocket, changes, lambda v: TaskResult.of(v, audio, retry))
    except Exception as exc:
        code, reason = errors.websocket_close(exc)
        await websocket.close(code, reason)
        return
    if sent:
        await websocket.close(1000, "settled")
