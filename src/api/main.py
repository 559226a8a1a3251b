"""The FastAPI app: lifespan (settings, logging, Redis), middleware, error handlers, routes.

`uvicorn src.api.main:app`. This module never imports torch or FunASR: jobs are enqueued by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi_offline import FastAPIOffline
from loguru import logger

from src.api import errors, metrics
from src.api.dependencies import require_api_key
from src.api.middleware import AccessLog, RequestBodyGuard, body_limit_for
from src.api.models import ErrorResponse
from src.api.openai_routes import openai_api
from src.api.routes import SUBMIT_THREADS, asr, push, stats_router, system
from src.config import Settings, get_settings
from src.logs import setup_logging
from src.records.redis_client import api_async_connection, api_connection
from src.service.history_drain import drain_forever
from src.service.push import LISTEN_S, EventHub
from src.uploads.recordings import ensure_dirs

# How long shutdown waits for the event relay: one read of its subscription, and a margin.
RELAY_STOP_S = LISTEN_S + 2.0

DESCRIPTION = """
Offline speech recognition (FunASR Paraformer-zh + FSMN-VAD + CT-punc, with hotwords).

1. `POST /api/v1/asr/submit` with a multipart `audio` file -> `task_id`.
2. Get the result without polling in a loop: `GET /api/v1/asr/result/{task_id}?wait=30` answers
   as soon as the task is `done` (text, sentences) or `failed`; or open the WebSocket
   `/api/v1/asr/ws/{task_id}` for every change as it happens.

The same audio with the same options is answered at once from the result cache (`cached: true`),
and an `Idempotency-Key` header makes a resent submit return its first task.

Every error is JSON with an `error` key.
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        setup_logging(settings, "api")
        ensure_dirs(settings)
        app.state.settings = settings
        app.state.redis = api_connection(settings)
        app.state.aredis = api_async_connection(settings)
        app.state.started = time.time()
        app.state.submit_limiter = CapacityLimiter(SUBMIT_THREADS)
        app.state.events = EventHub(app.state.aredis)
        relay = asyncio.create_task(app.state.events.run(), name="event-hub")
        drained = asyncio.Event()  # set: drain once more and stop
        drainer = asyncio.create_task(
            drain_forever(app.state.redis, settings.history_file, drained), name="history-drain"
        )
        logger.info(f"API starting: redis={settings.redis_display} queue={settings.rq_queue_name}")
        if settings.api_key is None and not is_loopback(settings.api_host):
            logger.warning(
                f"API_HOST={settings.api_host} is reachable from other machines and API_KEY is "
                "not set: anyone who can reach this port can submit, read and delete tasks"
            )
        yield
        drained.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(drainer, RELAY_STOP_S)
        app.state.events.stop()
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(relay, RELAY_STOP_S)
        app.state.redis.close()
        await app.state.aredis.aclose()

    # /docs and /redoc from the Swagger UI and ReDoc files fastapi-offline ships (served under
    # /static-offline-docs), not FastAPI's CDN: this service runs where no CDN can be reached.
    app = FastAPIOffline(
        title="ASR service",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    errors.install(app)
    protected = {
        "dependencies": [Depends(require_api_key)],
        "responses": {401: {"model": ErrorResponse, "description": "API_KEY missing or wrong"}},
    }
    app.include_router(asr, prefix="/api/v1", **protected)  # type: ignore[arg-type]
    app.include_router(push, prefix="/api/v1")  # WebSockets check the key themselves
    app.include_router(system, prefix="/api/v1")
    app.include_router(stats_router, prefix="/api/v1", **protected)  # type: ignore[arg-type]
    app.include_router(openai_api, dependencies=[Depends(require_api_key)])  # its own 401 shape
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key"],
            expose_headers=["Idempotent-Replayed"],
        )
    app.add_middleware(
        RequestBodyGuard,
        max_bytes=body_limit_for(settings.max_upload_bytes),
        reported_max=settings.max_upload_bytes,
        timeout_s=settings.api_body_timeout_seconds,
        min_rate=settings.api_body_min_rate,
    )
    app.add_middleware(AccessLog)
    metrics.install(app)  # after the other middleware: it counts what they answer too
    app.state.settings = settings  # what SettingsDep reads (also before the lifespan runs)
    return app


app = create_app()
