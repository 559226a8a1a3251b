"""Redis connections and the service's key names.

The API's connection has short timeouts so an outage turns into a 503 within a second instead of
a hung request; workers use a connection without a read timeout because RQ blocks on BLPOP.
With REDIS_SENTINELS set, each connection asks the sentinels for the current master (redis-py's
Sentinel client) and finds the new one after a failover; the timeouts and retries stay the same.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.sentinel
from loguru import logger
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.client import Pipeline
from redis.retry import Retry

from src.config import Settings

KEY_PREFIX = "asr"
HISTORY_KEY = f"{KEY_PREFIX}:history:latest"
# History lines of workers on other hosts, oldest first, for the API host's JSONL file; the lock
# lets one API process at a time append them.
HISTORY_OUTBOX_KEY = f"{KEY_PREFIX}:history:outbox"
HISTORY_DRAIN_LOCK_KEY = f"{KEY_PREFIX}:history:drain-lock"
AUDIO_INDEX_KEY = f"{KEY_PREFIX}:audio:index"
# Recordings whose task is queued or running: retention skips them without loading the task.
AUDIO_PINNED_KEY = f"{KEY_PREFIX}:audio:pinned"
# Recordings whose job has ended (scored by upload time, as in the index): what retention may
# remove. Reading it, not the whole index, keeps each pass as cheap with a backlog of thousands.
AUDIO_RELEASED_KEY = f"{KEY_PREFIX}:audio:released"
STATS_KEY = f"{KEY_PREFIX}:stats"
JOB_SECONDS_KEY = f"{KEY_PREFIX}:stats:job_seconds"
# What waits in the queue ({"jobs", "audio_seconds"}), refreshed by the workers' sweep.
BACKLOG_KEY = f"{KEY_PREFIX}:queue:backlog"
WORKER_KEY_PREFIX = f"{KEY_PREFIX}:worker:"
# Names of workers that published a beacon (scored by when it was last seen): the index that
# spares readers a SCAN of the keyspace. The beacons' own TTL still decides who is ready.
READY_WORKERS_KEY = f"{KEY_PREFIX}:workers"
# A worker that has no engine loaded yet (loading it, or waiting to try again after an error):
# its start state (TTL like the readiness beacon), and the index of such names for /health.
WORKER_START_KEY_PREFIX = f"{KEY_PREFIX}:worker-start:"
STARTING_WORKERS_KEY = f"{KEY_PREFIX}:workers:starting"
CLAIMED_KEY_PREFIX = f"{KEY_PREFIX}:claimed:"
# Jobs a worker took off a queue and has not started yet (job id -> its owner and queue), so that
# a worker killed between the two leaves a trace the sweep can requeue (src/queue/job_queue.py).
IN_HAND_KEY = f"{KEY_PREFIX}:queue:in_hand"
CLAIMERS_KEY = f"{KEY_PREFIX}:claimers"
# Who runs an RQ execution (worker name, incarnation, pid, host): see src/queue/recovery.py.
EXECUTION_OWNER_PREFIX = f"{KEY_PREFIX}:execution:"
# Worker processes found dead (incarnation -> when), to tell one job's crash from a wider outage.
DEATHS_KEY = f"{KEY_PREFIX}:deaths"
# When a worker last saw Redis unreachable (epoch seconds): deaths then are not the job's fault.
REDIS_OUTAGE_KEY = f"{KEY_PREFIX}:redis:last_outage"
# The workers' Prometheus figures, summed over every worker process and host
# (src/results/metrics.py): one hash per histogram (`asr:metrics:{name}`: a count per bucket,
# and the sum) and one of failures by reason. The API reads them at scrape time.
METRICS_KEY_PREFIX = f"{KEY_PREFIX}:metrics:"
FAILURES_KEY = f"{METRICS_KEY_PREFIX}failures"
# The result cache (src/results/cache.py): a fingerprint of audio, options and model -> the done
# task that holds its transcript. Idempotency claims (src/service/dedup.py): a client's key ->
# the task its first request created.
RESULT_CACHE_PREFIX = f"{KEY_PREFIX}:cache:"
IDEMPOTENCY_PREFIX = f"{KEY_PREFIX}:idempotency:"
# A name in a beacon index not refreshed for this long (its worker was killed) is dropped.
BEACON_STALE_S = 60
# A worker waits this long at most between two tries while Redis is away.
WORKER_RETRY_CAP_S = 5.0

# Errors that mean "Redis is unreachable or unhealthy": the API maps them to 503.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # with redis.sentinel.MasterNotFoundError: mid-failover
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.OutOfMemoryError,  # noeviction and full: refuse new work, keep the old
)


class Script:
    """A Lua script run by its SHA1 (EVALSHA): a call sends the hash, not the body.

    Redis forgets its scripts when it restarts (or on SCRIPT FLUSH); a call it answers NOSCRIPT
    runs again by the body (EVAL, which caches it): one round trip more, once per Redis start.
    Not redis-py's `register_script`: in a pipeline it asks SCRIPT EXISTS before each execute,
    a round trip per pipeline, and it loads a missing script with a round trip of its own.
    The keys a script derives from its arguments (not in KEYS) are fine on one Redis, Sentinel
    included, and would not be on a Redis Cluster, which this service does not use.
    """

    def __init__(self, body: str) -> None:
        self.body = body
        self.sha = hashlib.sha1(body.encode(), usedforsecurity=False).hexdigest()

    def __call__(self, conn: redis.Redis, keys: Sequence[str], args: Sequence[Any] = ()) -> Any:
        try:
            return conn.evalsha(self.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return conn.eval(self.body, len(keys), *keys, *args)

    def queue(self, pipe: Pipeline, keys: Sequence[str], args: Sequence[Any] = ()) -> None:
        """Add a call to a pipeline without MULTI, run by `run_batch`; `settle` its reply."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)

    def settle(
        self, conn: redis.Redis, reply: Any, keys: Sequence[str], args: Sequence[Any] = ()
    ) -> Any:
        """The reply of a `queue`d call, the script run by its body if Redis did not know it."""
        if isinstance(reply, redis.exceptions.NoScriptError):
            return conn.eval(self.body, len(keys), *keys, *args)
        return reply


def run_batch(pipe: Pipeline) -> list[Any]:
    """Execute a pipeline without MULTI (one round trip) whose scripts were added by
    `Script.queue`: their NOSCRIPT replies stay in place for `Script.settle`, and any other
    error is raised, as `execute` would."""
    replies: list[Any] = pipe.execute(raise_on_error=False)
    for reply in replies:
        if isinstance(reply, Exception) and not isinstance(reply, redis.exceptions.NoScriptError):
            raise reply
    return replies


def decoded(raw: bytes | str) -> str:
    """One reply item as text. The service's connections leave replies as bytes (no
    decode_responses), while redis-py types every item `bytes | str`, the str for connections
    that decode."""
    return raw.decode() if isinstance(raw, bytes) else raw


def task_key(task_id: str) -> str:
    return f"{KEY_PREFIX}:task:{task_id}"


def result_cache_key(fingerprint: str) -> str:
    return f"{RESULT_CACHE_PREFIX}{fingerprint}"


def idempotency_key(scope: str, key_digest: str) -> str:
    """A client's Idempotency-Key, by its SHA-256 (any text may be a key), within a scope."""
    return f"{IDEMPOTENCY_PREFIX}{scope}:{key_digest}"


def seq_key(day: str) -> str:
    return f"{KEY_PREFIX}:seq:{day}"


def worker_key(name: str) -> str:
    return f"{WORKER_KEY_PREFIX}{name}"


def metrics_key(name: str) -> str:
    return f"{METRICS_KEY_PREFIX}{name}"


def worker_start_key(name: str) -> str:
    return f"{WORKER_START_KEY_PREFIX}{name}"


def claimed_key(worker: str) -> str:
    """Jobs a worker took off the queue for its current batch and has not started yet."""
    return f"{CLAIMED_KEY_PREFIX}{worker}"


def execution_owner_key(execution_id: str) -> str:
    return f"{EXECUTION_OWNER_PREFIX}{execution_id}"


def publish_beacon(
    conn: redis.Redis, index: str, name: str, key: str, payload: str, ttl_s: int
) -> None:
    """A worker's beacon `key` (expires unless refreshed) and its name in `index`, the sorted
    set readers use instead of a SCAN; names not seen for BEACON_STALE_S (a killed worker)
    leave the index."""
    now = time.time()
    with conn.pipeline() as pipe:
        pipe.set(key, payload, ex=ttl_s)
        pipe.zadd(index, {name: now})
        pipe.zremrangebyscore(index, "-inf", now - BEACON_STALE_S)
        pipe.execute()


def withdraw_beacon(conn: redis.Redis, index: str, name: str, key: str) -> None:
    with conn.pipeline() as pipe:
        pipe.delete(key)
        pipe.zrem(index, name)
        pipe.execute()


class _SentinelConnection(redis.sentinel.SentinelManagedConnection):
    """Asks the sentinels for the master on every (re)connect. redis-py (8.1) reconnects a
    dropped connection inside a command's retry to the address it last had, without asking:
    a worker's command retried across a failover knocked on the dead master forever."""

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class _AsyncSentinelConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """`_SentinelConnection` for asyncio."""

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


def _sentinel_options(settings: Settings) -> dict[str, Any]:
    """How to reach the sentinels themselves: always briefly (they answer at once, and a dead
    one must not hold up asking the next), with their own password."""
    password = settings.redis_sentinel_password
    return {
        "socket_connect_timeout": 0.5,
        "socket_timeout": 1.0,
        "password": password.get_secret_value() if password else None,
    }


def _client(settings: Settings, **options: Any) -> redis.Redis:
    """A client with these connection options: to the sentinels' current master when
    REDIS_SENTINELS is set, else to the configured address."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_dsn, **options)
    sentinel = redis.sentinel.Sentinel(
        settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
    )
    client: redis.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_class=_SentinelConnection,
        db=settings.redis_db,
        password=settings.redis_password,
        **options,
    )
    return client


def _async_client(settings: Settings, **options: Any) -> redis.asyncio.Redis:
    """`_client` for asyncio."""
    if not settings.redis_sentinels:
        return redis.asyncio.Redis.from_url(settings.redis_dsn, **options)
    sentinel = redis.asyncio.sentinel.Sentinel(
        settings.sentinel_addresses, sentinel_kwargs=_sentinel_options(settings)
    )
    client: redis.asyncio.Redis = sentinel.master_for(
        settings.redis_sentinel_master,
        connection_class=_AsyncSentinelConnection,
        db=settings.redis_db,
        password=settings.redis_password,
        **options,
    )
    return client


def api_connection(settings: Settings) -> redis.Redis:
    """Connection for the API (and a worker's readiness beacon): fail fast, never hang.

    One immediate retry on a connection error: after a Redis restart the pooled connection is
    dead, and the first command must get a fresh one instead of a 503. Timeouts are not retried,
    so a stalled Redis still costs one read timeout.
    """
    return _client(
        settings,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
    )


def api_async_connection(settings: Settings) -> redis.asyncio.Redis:
    """Async twin for /health, which must answer even while every pool thread is uploading."""
    return _async_client(
        settings,
        socket_connect_timeout=0.5,
        socket_timeout=1.0,
        health_check_interval=10,
        retry=redis.asyncio.retry.Retry(
            NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)
        ),
    )


class _LoggedBackoff(ExponentialBackoff):
    """Exponential back-off that says in the worker log that it is waiting for Redis."""

    def compute(self, failures: int) -> float:
        delay = super().compute(failures)
        logger.warning(f"Redis unreachable; try {failures + 1} in {delay:.1f}s")
        return delay


def worker_connection(settings: Settings) -> redis.Redis:
    """Connection for RQ workers; RQ itself sets the read timeout above its BLPOP timeout.

    Every command, RQ's own bookkeeping included, retries with back-off for as long as Redis is
    away: a worker holds a loaded model and maybe a finished transcript, and dying in an outage
    would lose both. The job's own timeout still bounds how long a job can wait.
    """
    return _client(
        settings,
        socket_connect_timeout=2.0,
        socket_keepalive=True,
        health_check_interval=30,
        retry=Retry(_LoggedBackoff(cap=WORKER_RETRY_CAP_S, base=0.25), -1),
    )
