"""Errors of the /v1 routes in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`.

The rest of the API keeps its own shape, so this is not an app-wide handler: `OpenAIRoute` is the
/v1 router's route class, and turns what its endpoints raise into OpenAI's shape. The status
still comes from the app's own handlers (src/api/errors.py, with its one table of domain error
to status); only the body is reshaped, and 422 becomes 400, the status OpenAI's clients expect
for a bad field. Answers given before routing (the body guard's 408 and 413, an unknown path)
keep the native shape.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from src.service import errors as domain
from src.service.errors import ServiceError

# Which request field a domain error is about, as OpenAI's `param`.
SERVICE_PARAMS: dict[type[ServiceError], str] = {
    domain.InvalidAudio: "file",
    domain.AudioTooLong: "file",
    domain.UploadTooLarge: "file",
    domain.UnsupportedLanguage: "language",
}
_CAMEL_RE = re.compile(r"(?<!^)(?=[A-Z])")
# The native body's keys that become the message rather than extra members.
_MESSAGE_KEYS = ("error", "detail", "details")


class OpenAIError(Exception):
    """A refusal only this face has (a model it does not serve, an option it cannot honour)."""

    def __init__(
        self, status_code: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param
        self.code = code


def model_not_found(model: str, status_code: int) -> OpenAIError:
    return OpenAIError(
        status_code,
        f"The model `{model}` does not exist; GET /v1/models lists the models served here",
        param="model",
        code="model_not_found",
    )


def unsupported(param: str, message: str) -> OpenAIError:
    return OpenAIError(400, message, param=param, code="unsupported_value")


def error_response(
    status_code: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = "server_error" if status_code >= 500 else "invalid_request_error"
    error = {"message": message, "type": kind, "param": param, "code": code, **(extra or {})}
    return JSONResponse({"error": error}, status_code=status_code, headers=headers)


async def openai_error(request: Request, exc: Exception) -> Response:
    """Any exception from a /v1 endpoint as OpenAI's error object, with the app's own status."""
    if isinstance(exc, OpenAIError):
        return error_response(exc.status_code, exc.message, param=exc.param, code=exc.code)
    native = await _native_answer(request, exc)
    body: dict[str, Any] = json.loads(bytes(native.body))
    message, param = _message(body)
    extra = {k: v for k, v in body.items() if k not in _MESSAGE_KEYS}
    headers = {
        k: v for k, v in native.headers.items() if k not in ("content-length", "content-type")
    }
    code = None
    if isinstance(exc, ServiceError):
        code = _CAMEL_RE.sub("_", type(exc).__name__).lower()
        param = SERVICE_PARAMS.get(type(exc), param)
    elif native.status_code == 401:
        code = "invalid_api_key"
    if "task_id" in extra:
        # The task exists and goes on: say where its result will be, and keep the SDK from
        # retrying, which would transcribe the same upload again as a new task.
        extra["result_url"] = str(request.app.url_path_for("result", task_id=extra["task_id"]))
        headers |= {"x-task-id": extra["task_id"], "x-should-retry": "false"}
    status = 400 if native.status_code == 422 else native.status_code
    return error_response(status, message, param=param, code=code, extra=extra, headers=headers)


async def _native_answer(request: Request, exc: Exception) -> Response:
    """What the app's own handler for this exception answers (src/api/errors.py)."""
    handlers = request.app.exception_handlers
    handler = next(handlers[cls] for cls in type(exc).__mro__ if cls in handlers)
    answer = handler(request, exc)
    response: Response = await answer if inspect.isawaitable(answer) else answer
    return response


def _message(body: dict[str, Any]) -> tuple[str, str | None]:
    """The native body's error, detail and field errors as one sentence, and the first field."""
    message = str(body["error"])
    if "detail" in body:
        message = f"{message}: {body['detail']}"
    details = body.get("details") or []
    if not details:
        return message, None
    fields = [f"{d['field']}: {d['message']}" for d in details]
    where = str(details[0]["field"]).split(".")  # body.timestamp_granularities[].0
    param = (where[1] if len(where) > 1 else where[0]).removesuffix("[]")
    return f"{message}: {'; '.join(fields)}", param


class OpenAIRoute(APIRoute):
    """A route whose errors come out in OpenAI's shape (FastAPI's documented way to give one
    router its own error handling: a custom route class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def handle_openai(request: Request) -> Response:
            try:
                return await handle(request)
            except Exception as exc:
                return await openai_error(request, exc)

        return handle_openai
