"""What the workers measure for Prometheus, kept in Redis so that it adds up across processes.

Each worker process, on this host or another, adds its jobs' figures to a few Redis hashes with
HINCRBY/HINCRBYFLOAT: a histogram is one hash (`asr:metrics:{name}`) holding a count per bucket
and the sum, and failures are counted by reason in `asr:metrics:failures`. The API turns them
into Prometheus metrics when it is scraped (src/service/monitoring.py, src/api/metrics.py).
Prometheus' own multiprocess mode would need every worker to share one directory with the API,
which workers on other hosts do not have, and it loses a dead process's gauges; a counter in
Redis survives restarts of workers and of the API alike.

A job's figures are written when it ends, in the pipeline that also updates `asr:stats`, so a
job costs one round trip for all of them. Nothing here imports prometheus_client: workers only
count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

import redis

from src.records.redis_client import FAILURES_KEY, decoded, metrics_key

FailureReason = Literal[
    "timeout", "invalid_audio", "recording_missing", "engine_error", "abandoned", "other"
]
"""Why a task failed, as a bounded label: timeout (past RQ_WORKER_TIMEOUT), invalid_audio (the
worker could not decode it), recording_missing (deleted before a worker reached it),
engine_error (the engine refused it), abandoned (its worker died under it), other."""
FAILURE_REASONS: tuple[FailureReason, ...] = get_args(FailureReason)

INF_FIELD = "+Inf"
SUM_FIELD = "sum"


@dataclass(frozen=True)
class HistogramSpec:
    """A histogram's name (the Prometheus metric, less the `asr_` prefix), its bucket upper
    bounds and its help text. Changing the bounds of a live histogram: delete its key."""

    name: str
    buckets: tuple[float, ...]
    help: str

    @property
    def key(self) -> str:
        return metrics_key(self.name)

    def field_for(self, value: float) -> str:
        """The field counting `value`: the smallest bound not below it."""
        for bound in self.buckets:
            if value <= bound:
                return bucket_field(bound)
        return INF_FIELD


def bucket_field(bound: float) -> str:
    return format(bound, "g")


WAIT = HistogramSpec(
    "job_wait_seconds",
    (0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
    "Seconds a job waited in the queue, from its (last) enqueue to a worker starting it; "
    "observed when the job ends, done or failed",
)
PROCESSING = HistogramSpec(
    "job_processing_seconds",
    (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    "Seconds from a worker starting a job to its result being stored (jobs that finished done)",
)
RTF = HistogramSpec(
    "job_rtf",
    (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
    "Real-time factor of finished jobs: engine seconds per second of audio",
)
BATCH = HistogramSpec(
    "batch_size",
    (1, 2, 4, 8, 16, 32, 64),
    "Jobs decoded together in one engine pass (1: alone; see ASR_BATCH_JOBS)",
)
HISTOGRAMS = (WAIT, PROCESSING, RTF, BATCH)


@dataclass(frozen=True)
class HistogramValues:
    """One histogram as read back: cumulative counts per upper bound (the last is +Inf)."""

    buckets: list[tuple[float, int]]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


def elapsed(since: datetime | None, until: datetime | None) -> float | None:
    """Seconds between two instants, or None when one is unknown or they are out of order (a
    task requeued after its worker died keeps the earlier start until it starts again)."""
    if since is None or until is None:
        return None
    seconds = (until - since).total_seconds()
    return seconds if seconds >= 0 else None


def observe(pipe: redis.client.Pipeline, spec: HistogramSpec, value: float) -> None:
    pipe.hincrby(spec.key, spec.field_for(value), 1)
    pipe.hincrbyfloat(spec.key, SUM_FIELD, value)


def record_done(
    pipe: redis.client.Pipeline,
    *,
    waited: float | None,
    processing: float | None,
    rtf: float,
    batch: int,
) -> None:
    """A finished job's figures; `batch` is the size of the engine pass this job ran (0 when
    another job's pass made its result, so that each pass is counted once)."""
    if waited is not None:
        observe(pipe, WAIT, waited)
    if processing is not None:
        observe(pipe, PROCESSING, processing)
    observe(pipe, RTF, rtf)
    if batch > 0:
        observe(pipe, BATCH, batch)


def record_failure(
    pipe: redis.client.Pipeline, reason: FailureReason, waited: float | None
) -> None:
    pipe.hincrby(FAILURES_KEY, reason, 1)
    if waited is not None:
        observe(pipe, WAIT, waited)


def histogram(spec: HistogramSpec, raw: dict[bytes | str, bytes | str]) -> HistogramValues:
    """A histogram from its hash (HGETALL), bucket counts made cumulative as Prometheus wants."""
    fields = {decoded(k): decoded(v) for k, v in raw.items()}
    buckets: list[tuple[float, int]] = []
    total = 0
    for bound in spec.buckets:
        total += int(fields.get(bucket_field(bound), 0))
        buckets.append((float(bound), total))
    total += int(fields.get(INF_FIELD, 0))
    buckets.append((float("inf"), total))
    return HistogramValues(buckets=buckets, sum=float(fields.get(SUM_FIELD, 0.0)))


def failures(raw: dict[bytes | str, bytes | str]) -> dict[FailureReason, int]:
    """Failures by reason from their hash, every reason present (0 if it never happened)."""
    counts = {decoded(k): int(v) for k, v in raw.items()}
    return {reason: counts.get(reason, 0) for reason in FAILURE_REASONS}
