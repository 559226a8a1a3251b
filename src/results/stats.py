"""Service counters in one Redis hash (`asr:stats`): cheap to update, survive API restarts."""

from __future__ import annotations

import redis

from src.records.redis_client import JOB_SECONDS_KEY, STATS_KEY, decoded

# Recent jobs whose worker time the wait estimate averages.
JOB_SECONDS_KEPT = 100


def incr_submitted(conn: redis.Redis | redis.client.Pipeline) -> None:
    conn.hincrby(STATS_KEY, "submitted", 1)


def record_done(
    pipe: redis.client.Pipeline, audio_seconds: float, processing_seconds: float
) -> None:
    """Queued on the job's pipeline, beside its Prometheus figures (src/results/metrics.py)."""
    pipe.hincrby(STATS_KEY, "done", 1)
    pipe.hincrbyfloat(STATS_KEY, "audio_seconds", audio_seconds)
    pipe.hincrbyfloat(STATS_KEY, "processing_seconds", processing_seconds)


def record_failed(pipe: redis.client.Pipeline) -> None:
    pipe.hincrby(STATS_KEY, "failed", 1)


def record_cached(pipe: redis.client.Pipeline) -> None:
    """An upload answered from the result cache: no worker time, so not a `done` job."""
    pipe.hincrby(STATS_KEY, "cached", 1)


def read(conn: redis.Redis) -> dict[str, float]:
    return parse(conn.hgetall(STATS_KEY))


def parse(raw: dict[bytes | str, bytes | str]) -> dict[str, float]:
    """The counters from the hash's HGETALL reply."""
    return {decoded(k): float(v) for k, v in raw.items()}


def record_job(conn: redis.Redis, busy_seconds: float, audio_seconds: float) -> None:
    """Worker time one job took (a batch's pass shared out) and its audio: the wait estimate's
    throughput, in worker seconds per second of audio."""
    with conn.pipeline() as pipe:
        pipe.lpush(JOB_SECONDS_KEY, f"{busy_seconds:.4f}:{audio_seconds:.3f}")
        pipe.ltrim(JOB_SECONDS_KEY, 0, JOB_SECONDS_KEPT - 1)
        pipe.execute()


def recent_throughput(conn: redis.Redis) -> tuple[float, float] | None:
    """(worker seconds per job, worker seconds per audio second) over the last
    JOB_SECONDS_KEPT jobs; None before any job finished."""
    return throughput(conn.lrange(JOB_SECONDS_KEY, 0, -1))


def read_throughput(pipe: redis.client.Pipeline) -> None:
    """`recent_throughput` as one command of a pipeline; `throughput` takes its reply."""
    pipe.lrange(JOB_SECONDS_KEY, 0, -1)


def throughput(timed: list[bytes | str]) -> tuple[float, float] | None:
    """`recent_throughput` from the reply of its LRANGE."""
    pairs = [decoded(raw).split(":") for raw in timed]
    if not pairs:
        return None
    busy = sum(float(b) for b, _ in pairs)
    audio = sum(float(a) for _, a in pairs)
    return busy / len(pairs), (busy / audio if audio > 0 else 0.0)


def record_history_error(conn: redis.Redis) -> None:
    conn.hincrby(STATS_KEY, "history_write_errors", 1)
