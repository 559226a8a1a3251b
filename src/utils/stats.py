"""Service counters in one Redis hash (`asr:stats`): cheap to update, survive API restarts."""

from __future__ import annotations

import redis

from src.utils.redis_client import JOB_SECONDS_KEY, STATS_KEY

# Recent jobs whose worker time the wait estimate averages.
JOB_SECONDS_KEPT = 100


def incr_submitted(conn: redis.Redis | redis.client.Pipeline) -> None:
    conn.hincrby(STATS_KEY, "submitted", 1)


def record_done(conn: redis.Redis, audio_seconds: float, processing_seconds: float) -> None:
    with conn.pipeline() as pipe:
        pipe.hincrby(STATS_KEY, "done", 1)
        pipe.hincrbyfloat(STATS_KEY, "audio_seconds", audio_seconds)
        pipe.hincrbyfloat(STATS_KEY, "processing_seconds", processing_seconds)
        pipe.execute()


def record_failed(conn: redis.Redis) -> None:
    conn.hincrby(STATS_KEY, "failed", 1)


def read(conn: redis.Redis) -> dict[str, float]:
    raw = conn.hgetall(STATS_KEY)
    return {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}


def record_job_seconds(conn: redis.Redis, seconds: float) -> None:
    """Worker time one job took, batches shared out: what the wait estimate is based on."""
    with conn.pipeline() as pipe:
        pipe.lpush(JOB_SECONDS_KEY, round(seconds, 4))
        pipe.ltrim(JOB_SECONDS_KEY, 0, JOB_SECONDS_KEPT - 1)
        pipe.execute()


def recent_job_seconds(conn: redis.Redis) -> float | None:
    """Mean worker seconds per job over the last JOB_SECONDS_KEPT jobs (None before any)."""
    values = [float(v) for v in conn.lrange(JOB_SECONDS_KEY, 0, -1)]
    return sum(values) / len(values) if values else None


def record_history_error(conn: redis.Redis) -> None:
    conn.hincrby(STATS_KEY, "history_write_errors", 1)
