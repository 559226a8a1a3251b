"""A worker's start state in Redis: what /health shows for a worker with no engine loaded yet.

The readiness beacon (`asr:worker:{name}`) means "engine loaded, taking jobs", and submit and
/health count workers by it. Before that, a worker publishes `asr:worker-start:{name}`: it is
loading its engine, or the last try failed and it tries again later (on a first run: the models
are not downloaded). Same lifetime rules as the readiness beacon: a TTL refreshed while the
worker lives, and an index of names so that readers need no SCAN.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

import redis
import redis.asyncio
from pydantic import BaseModel, Field, ValidationError

from src.records.redis_client import (
    STARTING_WORKERS_KEY,
    decoded,
    publish_beacon,
    withdraw_beacon,
    worker_start_key,
)


class WorkerStart(BaseModel):
    """One worker that is not ready yet, and why."""

    name: str
    state: Literal["loading", "failed"] = Field(
        description="`loading`: loading its engine now; `failed`: the last try failed with "
        "`error`, and it tries again at `retry_at` (no restart needed)"
    )
    error: str | None = Field(None, description="why the last try to load the engine failed")
    attempts: int = Field(1, description="tries to load the engine so far")
    since: datetime = Field(description="when this worker process began to start")
    retry_at: datetime | None = None
    pid: int
    hostname: str


def publish(conn: redis.Redis, start: WorkerStart, ttl_s: int) -> None:
    key = worker_start_key(start.name)
    publish_beacon(conn, STARTING_WORKERS_KEY, start.name, key, start.model_dump_json(), ttl_s)


def withdraw(conn: redis.Redis, name: str) -> None:
    withdraw_beacon(conn, STARTING_WORKERS_KEY, name, worker_start_key(name))


async def starting(aconn: redis.asyncio.Redis) -> list[WorkerStart]:
    """Every worker whose start state has not expired, by name."""
    # Without WITHSCORES the reply holds members only.
    names = cast("list[bytes | str]", await aconn.zrange(STARTING_WORKERS_KEY, 0, -1))
    if not names:
        return []
    raws = await aconn.mget([worker_start_key(decoded(n)) for n in names])
    found = []
    for raw in raws:
        if not raw:
            continue
        try:
            found.append(WorkerStart.model_validate_json(raw))
        except ValidationError:  # written by another release: not worth failing /health for
            continue
    return sorted(found, key=lambda s: s.name)
