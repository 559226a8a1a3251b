"""Annotated dependencies, so routes read like `def result(task_id: TaskId, conn: RedisDep)`.

Each is `async def` although none waits: FastAPI runs a plain `def` dependency in its thread
pool, one hand-off per dependency per request, and under load those hand-offs cost the API more
CPU than the dependencies themselves."""

from __future__ import annotations

import hmac
from typing import Annotated

import redis
from fastapi import Depends, Path, Security, WebSocket
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import HTTPConnection

from src.api.errors import APIError
from src.config import Settings
from src.queue.job_queue import Lanes, get_lanes
from src.records.task_store import TASK_ID_PATTERN, is_valid_task_id
from src.service.push import EventHub


async def app_settings(request: HTTPConnection) -> Settings:
    """The settings create_app was given. Not FastAPI's dependency_overrides: with any override
    set, FastAPI analyses every dependency's signature again on every request."""
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(app_settings)]

_bearer = HTTPBearer(auto_error=False, description="API_KEY as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="API_KEY")


def key_accepted(settings: Settings, given: str | None) -> bool:
    """No API_KEY set, or `given` is it (compared in constant time)."""
    if settings.api_key is None:
        return True
    expected = settings.api_key.get_secret_value()
    return bool(given) and hmac.compare_digest((given or "").encode(), expected.encode())


async def require_api_key(
    settings: SettingsDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> None:
    """When API_KEY is set, every protected route needs it."""
    if not key_accepted(settings, header or (bearer.credentials if bearer else "")):
        raise APIError(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


def websocket_key(websocket: WebSocket) -> str | None:
    """The key a WebSocket client sent: a header like every route, or `api_key` in the query,
    since a browser cannot set headers on a WebSocket."""
    auth = websocket.headers.get("authorization", "")
    bearer = auth[7:] if auth.lower().startswith("bearer ") else None
    return websocket.headers.get("x-api-key") or bearer or websocket.query_params.get("api_key")


async def get_events(request: HTTPConnection) -> EventHub:
    hub: EventHub = request.app.state.events  # started by the lifespan in src/api/main.py
    return hub


EventsDep = Annotated[EventHub, Depends(get_events)]


async def get_redis(request: HTTPConnection) -> redis.Redis:
    conn: redis.Redis = request.app.state.redis  # set by the lifespan in src/api/main.py
    return conn


RedisDep = Annotated[redis.Redis, Depends(get_redis)]


async def get_rq_lanes(conn: RedisDep, settings: SettingsDep) -> Lanes:
    return get_lanes(conn, settings)


LanesDep = Annotated[Lanes, Depends(get_rq_lanes)]


async def valid_task_id(
    task_id: Annotated[
        str,
        Path(
            description="the id returned by submit: `YYYY-MM-DD_NNN_` + 24 hex digits",
            examples=["2025-12-01_001_0a1b2c3d4e5f60718293a4b5"],
            # Published only: FastAPI's own check would answer in its generic 422 shape.
            json_schema_extra={"pattern": TASK_ID_PATTERN},
        ),
    ],
) -> str:
    """A malformed id is a 422 before any lookup: it could never name a task."""
    if not is_valid_task_id(task_id):
        raise APIError(422, "Invalid task id", task_id=task_id[:100])
    return task_id


TaskId = Annotated[str, Depends(valid_task_id)]
