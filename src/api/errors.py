"""One map from exception to JSON error, all with the same `{"error": ...}` shape.

The service raises named domain errors (src/service/errors.py); `SERVICE_ERROR_STATUS` is the one
place that gives each its HTTP status. `APIError` is for what only HTTP knows: keys, ids in the
path, form fields, Range headers. No handler puts a traceback, a path or a Redis detail into a
response; those go to the error log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from loguru import logger
from starlette.exceptions import HTTPException as StarletteHTTPException

from src.records.redis_client import REDIS_ERRORS
from src.service import errors as domain
from src.service.errors import ServiceError

SERVICE_ERROR_STATUS: dict[type[ServiceError], int] = {
    domain.InvalidAudio: 400,
    domain.TaskNotFound: 404,
    domain.RecordingNotFound: 404,
    domain.TaskNotFailed: 409,
    domain.TaskNotDone: 409,
    domain.IdempotencyConflict: 409,
    domain.RecordingGone: 410,
    domain.UploadTooLarge: 413,
    domain.AudioTooLong: 413,
    domain.UnsupportedLanguage: 422,
    domain.CallbacksNotConfigured: 422,
    domain.CallbackRefused: 422,
    domain.StorageFull: 507,
    # The synchronous face (/v1/audio/transcriptions): the task failed, or outlasted the wait.
    domain.TranscriptionFailed: 500,
    domain.TranscriptionTimeout: 504,
}


class APIError(Exception):
    """An error the client caused or must know about, with its status and context keys."""

    def __init__(
        self, status_code: int, error: str, headers: dict[str, str] | None = None, **context: Any
    ) -> None:
        super().__init__(error)
        self.status_code = status_code
        self.error = error
        self.headers = headers
        self.context = context


def repeated_fields(counts: dict[str, int]) -> APIError:
    """A form field sent more than once: only one would be used, so none is; same shape as a
    validation error."""
    details = [
        {"field": f"body.{name}", "message": f"sent {n} times; send it once"}
        for name, n in counts.items()
    ]
    return APIError(422, "Invalid request", details=details)


def too_many_hotwords(count: int, limit: int) -> APIError:
    return APIError(422, "Too many hotwords", count=count, max_hotwords=limit)


def bad_range(detail: str) -> APIError:
    return APIError(400, "Invalid Range header", detail=detail)


def range_not_satisfiable(size: int) -> APIError:
    """416 keeps the `Content-Range: bytes */size` a client needs to ask again."""
    return APIError(
        416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"}, size=size
    )


@dataclass(frozen=True)
class Rejection:
    """An answer given below FastAPI (ASGI middleware, the HTTP protocol) while the request's body
    is unread: the same JSON shape, and the connection closes after it."""

    status: int
    error: str
    context: dict[str, Any] = field(default_factory=dict)

    def encode(self) -> tuple[list[tuple[bytes, bytes]], bytes]:
        body = json.dumps({"error": self.error, **self.context}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        return headers, body


def upload_too_large(max_bytes: int) -> Rejection:
    return Rejection(413, "File too large", {"max_bytes": max_bytes})


def body_too_slow(timeout_s: float, min_rate: int) -> Rejection:
    context = {"timeout_seconds": timeout_s, "min_bytes_per_second": min_rate}
    return Rejection(408, "Request timeout: the body arrived too slowly", context)


def headers_too_slow(timeout_s: float) -> Rejection:
    return Rejection(
        408, "Request timeout: the headers arrived too slowly", {"timeout_seconds": timeout_s}
    )


# WebSocket close codes: RFC 6455 leaves 4000-4999 to applications, so an error closes the
# socket with 4000 + the status its HTTP twin would answer (4404: unknown task), and an outage
# with 1013 ("try again later"). Reasons must fit a control frame: 123 bytes.
WS_UNAVAILABLE = 1013


def websocket_close(exc: Exception) -> tuple[int, str]:
    """The close code and reason for an error met while serving a WebSocket."""
    if isinstance(exc, APIError):
        return 4000 + exc.status_code, exc.error[:123]
    if isinstance(exc, ServiceError):
        return 4000 + SERVICE_ERROR_STATUS[type(exc)], str(exc)[:123]
    if isinstance(exc, REDIS_ERRORS):
        logger.error(f"WebSocket - redis unavailable: {type(exc).__name__}")
        return WS_UNAVAILABLE, "Service unavailable: the queue (Redis) is unreachable"
    raise exc


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content=body, headers=headers)


async def _api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return _json(exc.status_code, {"error": exc.error, **exc.context}, exc.headers)


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return _json(SERVICE_ERROR_STATUS[type(exc)], {"error": str(exc), **exc.context()})


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _json(exc.status_code, {"error": str(exc.detail)}, getattr(exc, "headers", None))


def _message(err: dict[str, Any]) -> str:
    msg = str(err.get("msg", ""))
    if "Expected UploadFile" in msg:  # a text field (or a part without a filename) sent as the file
        return "Expected a file: send it as a multipart/form-data part with a filename"
    return msg


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    details = [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "message": _message(err)}
        for err in exc.errors()
    ]
    return _json(422, {"error": "Invalid request", "details": details})


async def _redis_down(request: Request, exc: Exception) -> JSONResponse:
    logger.error(f"{request.method} {request.url.path} - redis unavailable: {type(exc).__name__}")
    return _json(
        503,
        {"error": "Service unavailable: the queue (Redis) is unreachable"},
        {"Retry-After": "5"},
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    logger.opt(exception=exc).error(f"{request.method} {request.url.path} - unhandled error")
    return _json(500, {"error": "Internal server error"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for exc_type in REDIS_ERRORS:
        app.add_exception_handler(exc_type, _redis_down)
    app.add_exception_handler(Exception, _unexpected)
