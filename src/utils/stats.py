"""Service counters in one Redis hash (`asr:stats`): cheap to update, survive API restarts."""

from __future__ import annotations

import redis

from src.utils.redis_client import STATS_KEY


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


def mean_processing_seconds(conn: redis.Redis) -> float | None:
    values = read(conn)
    done = values.get("done", 0.0)
    return values.get("processing_seconds", 0.0) / done if done else None
