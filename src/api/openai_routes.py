"""The OpenAI-compatible face under /v1: `POST /v1/audio/transcriptions` and `GET /v1/models`.

A synchronous face on the same queue: the upload goes through the native submit use case, so it
is checked, stored, queued, batched, retried and recorded like any other task, and the answer
waits for the task (src/service/transcripts.py) up to OPENAI_WAIT_SECONDS. Errors come in
OpenAI's shape (src/api/openai_errors.py); every answer about a task names it in `x-task-id`,
so a client that gave up can still fetch the result from the native API.
"""

from __future__ import annotations

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, File, Form, Path, Request, Response, UploadFile

from src.api.dependencies import LanesDep, RedisDep, SettingsDep
from src.api.errors import APIError
from src.api.exports import FILE_CONTENT, transcript_file
from src.api.forms import request_hotwords
from src.api.openai_errors import OpenAIError, OpenAIRoute, model_not_found, unsupported
from src.api.openai_models import (
    Granularity,
    OpenAIErrorResponse,
    OpenAIModel,
    OpenAIModelList,
    OpenAITranscription,
    OpenAIVerboseTranscription,
    ResponseFormat,
)
from src.asr.hotwords import MAX_HOTWORDS
from src.config import Settings
from src.media.audio import SUPPORTED_FORMATS
from src.records.task_store import TaskRecord
from src.results import subtitles
from src.service import transcripts
from src.service.models import SubmitRequest
from src.service.submit import submit as submit_upload
from src.vocabulary import Priority

# A request that names no language gets the native submit form's default.
DEFAULT_LANGUAGE = "zh"

OE = OpenAIErrorResponse
# Every /v1 route's errors; "4XX" also keeps FastAPI from documenting its own 422 shape.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": OE, "description": "API_KEY missing or wrong (`code`: `invalid_api_key`)"},
    503: {"model": OE, "description": "Redis is unreachable"},
    "4XX": {"model": OE, "description": "Any other refusal (bad fields are 400, never 422)"},
}

openai_api = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)


def served_models(settings: Settings) -> list[str]:
    """The configured ASR model's name, then its aliases: every `model` a request may name."""
    return list(dict.fromkeys([settings.asr_model_name, *settings.openai_model_aliases]))


@openai_api.post(
    "/audio/transcriptions",
    response_model=None,
    summary="Transcribe a recording (OpenAI-compatible, waits for the result)",
    description=(
        "OpenAI's `audio.transcriptions.create`: the upload joins the same queue as "
        "`/api/v1/asr/submit`, and the answer waits for its result up to `OPENAI_WAIT_SECONDS` "
        "(504 after that, with the task id: the task goes on, and `GET /api/v1/asr/result/"
        "{task_id}` has it later). Audio is judged by content: "
        f"{', '.join(SUPPORTED_FORMATS)}.\n\n"
        "- `model`: the configured model (see `GET /v1/models`) or an alias of it "
        "(`OPENAI_MODEL_ALIASES`, by default `whisper-1`).\n"
        "- `prompt` is read as **hotwords**, not as a style prompt: words separated by spaces or "
        f"commas that bias recognition toward them (at most {MAX_HOTWORDS}; letters, digits "
        "and CJK characters, up to 32 each). A word outside that is a 400.\n"
        "- `response_format`: `json`, `text`, `srt`, `vtt` or `verbose_json` (segments from the "
        "sentence timestamps). `timestamp_granularities[]=segment` is accepted; word timestamps "
        "are not available.\n"
        "- `temperature` is accepted and ignored; `stream=true` is refused.\n\n"
        "Every answer about a task carries its id in the `x-task-id` header."
    ),
    responses={
        200: {
            "model": OpenAITranscription | OpenAIVerboseTranscription,
            "content": FILE_CONTENT,
            "description": "the transcript in `response_format`",
        },
        400: {"model": OE, "description": "Unknown model, a bad field, or not decodable audio"},
        413: {"model": OE, "description": "Upload or audio duration over the limit"},
        500: {"model": OE, "description": "The task failed (`code`: `transcription_failed`)"},
        504: {"model": OE, "description": "Not finished within OPENAI_WAIT_SECONDS"},
        507: {"model": OE, "description": "The server's disk is full"},
        **COMMON_ERRORS,
    },
)
async def transcriptions(
    request: Request,
    conn: RedisDep,
    lanes: LanesDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File(description="the recording")],
    model: Annotated[
        str, Form(description="a model id from GET /v1/models", examples=["whisper-1"])
    ],
    language: Annotated[
        str | None, Form(description=f"language hint (ASR_LANGUAGES); absent: {DEFAULT_LANGUAGE}")
    ] = None,
    prompt: Annotated[
        str | None, Form(description="hotwords, separated by spaces or commas (not a prompt)")
    ] = None,
    response_format: Annotated[ResponseFormat, Form()] = "json",
    timestamp_granularities: Annotated[
        list[Granularity] | None,
        Form(alias="timestamp_granularities[]", description="`segment` only"),
    ] = None,
    temperature: Annotated[float | None, Form(ge=0, le=1, description="ignored")] = None,
    stream: Annotated[bool, Form(description="must be false: no streaming")] = False,
) -> Response:
    if model not in served_models(settings):
        raise model_not_found(model, 400)
    if stream:
        raise unsupported("stream", "Streaming is not supported: send stream=false")
    if "word" in (timestamp_granularities or []):
        raise unsupported(
            "timestamp_granularities", "Word timestamps are not available; use segment"
        )
    try:
        hotwords = request_hotwords(prompt)
    except APIError as exc:
        raise OpenAIError(400, _prompt_refusal(exc), param="prompt") from exc
    upload = SubmitRequest(
        upload=file.file,
        filename=file.filename,
        language=language or DEFAULT_LANGUAGE,
        batch_size=settings.asr_batch_size,
        hotwords=hotwords,
        # A synchronous caller holds a connection open for its answer: the high lane.
        priority=Priority.HIGH,
    )
    submitted = await to_thread.run_sync(
        submit_upload, conn, lanes, settings, upload, limiter=request.app.state.submit_limiter
    )
    request.state.log = submitted.log_line()
    record = await transcripts.wait_finished(
        request.app.state.aredis, submitted.task_id, settings.openai_wait_seconds
    )
    answer = _render(record, response_format)
    answer.headers["x-task-id"] = record.task_id
    return answer


def _prompt_refusal(exc: APIError) -> str:
    words = exc.context.get("invalid")
    what = f"{exc.error}: {', '.join(words) if words else exc.context.get('count')}"
    return (
        f"{what}. `prompt` is read as hotwords: up to {MAX_HOTWORDS} words of letters, digits "
        "or CJK characters (32 at most each), separated by spaces or commas"
    )


def _render(record: TaskRecord, response_format: ResponseFormat) -> Response:
    if response_format == "json":
        return _json(OpenAITranscription.of(record))
    if response_format == "verbose_json":
        cues = subtitles.cues(record.sentences, record.text or "", record.duration)
        return _json(OpenAIVerboseTranscription.of(record, cues))
    return transcript_file(record, "txt" if response_format == "text" else response_format)


def _json(body: OpenAITranscription | OpenAIVerboseTranscription) -> Response:
    return Response(body.model_dump_json(), media_type="application/json")


@openai_api.get(
    "/models",
    response_model=OpenAIModelList,
    summary="The models `model` may name (OpenAI-compatible)",
    responses=COMMON_ERRORS,
)
def list_models(settings: SettingsDep) -> OpenAIModelList:
    return OpenAIModelList(data=[OpenAIModel(id=name) for name in served_models(settings)])


@openai_api.get(
    "/models/{model:path}",
    response_model=OpenAIModel,
    summary="One model (OpenAI-compatible)",
    responses={404: {"model": OE, "description": "Not a model served here"}, **COMMON_ERRORS},
)
def get_model(
    settings: SettingsDep,
    model: Annotated[str, Path(description="a model id", examples=["whisper-1"])],
) -> OpenAIModel:
    if model not in served_models(settings):
        raise model_not_found(model, 404)
    return OpenAIModel(id=model)
