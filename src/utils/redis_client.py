"""Redis connections and the service's key names.

The API's connection has short timeouts so an outage turns into a 503 within a second instead of
a hung request; workers use a connection without a read timeout because RQ blocks on BLPOP.
"""

from __future__ import annotations

import redis
import redis.asyncio

from src.asr.config import Settings

KEY_PREFIX = "asr"
HISTORY_KEY = f"{KEY_PREFIX}:history:latest"
AUDIO_INDEX_KEY = f"{KEY_PREFIX}:audio:index"
# Recordings whose task is queued or running: retention skips them without loading the task.
AUDIO_PINNED_KEY = f"{KEY_PREFIX}:audio:pinned"
STATS_KEY = f"{KEY_PREFIX}:stats"
WORKER_KEY_PREFIX = f"{KEY_PREFIX}:worker:"
# Names of workers that published a beacon (scored by when it was last seen): the index that
# spares readers a SCAN of the keyspace. The beacons' own TTL still decides who is ready.
READY_WORKERS_KEY = f"{KEY_PREFIX}:workers"
CLAIMED_KEY_PREFIX = f"{KEY_PREFIX}:claimed:"
CLAIMERS_KEY = f"{KEY_PREFIX}:claimers"

# Errors that mean "Redis is unreachable or unhealthy": the API maps them to 503.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,  # noeviction and full: refuse new work, keep the old
)


def task_key(task_id: str) -> str:
    return f"{KEY_PREFIX}:task:{task_id}"


def seq_key(day: str) -> str:
    return f"{KEY_PREFIX}:seq:{day}"


def worker_key(name: str) -> str:
    return f"{WORKER_KEY_PREFIX}{name}"


def claimed_key(worker: str) -> str:
    """Jobs a worker took off the queue for its current batch and has not started yet."""
    return f"{CLAIMED_KEY_PREFIX}{worker}"


def api_connection(settings: Settings) -> redis.Redis:
    """Connection for the API (and a worker's readiness beacon): fail fast, never hang."""
    return redis.Redis.from_url(
        settings.redis_dsn,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=10,
        retry_on_timeout=False,
    )


def api_async_connection(settings: Settings) -> redis.asyncio.Redis:
    """Async twin for /health, which must answer even while every pool thread is uploading."""
    return redis.asyncio.Redis.from_url(
        settings.redis_dsn,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=10,
        retry_on_timeout=False,
    )


def worker_connection(settings: Settings) -> redis.Redis:
    """Connection for RQ workers; RQ itself sets the read timeout above its BLPOP timeout."""
    return redis.Redis.from_url(
        settings.redis_dsn,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=30,
    )
