"""What a Prometheus scrape reports besides the API's own requests: the queue, the workers and the
figures the workers counted (src/results/metrics.py).

Everything is read when the scrape comes, in two pipelined round trips however many workers and
queued jobs there are: the first reads the queue's length and head, the index of workers, the
counters and the histograms; the second the workers' readiness beacons and the head job's
enqueue time. Queue depth and worker states are thus as fresh as Redis; a beacon's
`current_task` is at most one beat (5 s) old.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue
from rq.job import Job
from rq.utils import utcparse

from src.records.redis_client import FAILURES_KEY, READY_WORKERS_KEY, STATS_KEY, decoded, worker_key
from src.results import metrics, stats
from src.results.metrics import FailureReason, HistogramSpec, HistogramValues


@dataclass(frozen=True)
class LaneFigures:
    depth: int
    oldest_age: float
    """Seconds the job at the head of the lane has waited since it was enqueued (0: empty)."""


@dataclass(frozen=True)
class WorkerFigures:
    """One ready worker, from its beacon (present only while its model is loaded)."""

    name: str
    device: str
    busy: bool
    model_load_seconds: float


@dataclass(frozen=True)
class ServiceFigures:
    lanes: dict[str, LaneFigures]
    workers: list[WorkerFigures]
    counters: dict[str, float]
    """`asr:stats`: submitted, done, failed, audio_seconds, processing_seconds, ..."""
    failures: dict[FailureReason, int]
    histograms: list[tuple[HistogramSpec, HistogramValues]]


def read(conn: redis.Redis, lanes: Mapping[str, Queue]) -> ServiceFigures:
    """Everything in two round trips; Redis errors propagate (the caller reports Redis down)."""
    with conn.pipeline(transaction=False) as pipe:
        pipe.zrange(READY_WORKERS_KEY, 0, -1)
        pipe.hgetall(STATS_KEY)
        pipe.hgetall(FAILURES_KEY)
        for spec in metrics.HISTOGRAMS:
            pipe.hgetall(spec.key)
        for queue in lanes.values():
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
        names_raw, stats_raw, failures_raw, *rest = pipe.execute()
    histograms_raw = rest[: len(metrics.HISTOGRAMS)]
    queue_raw = rest[len(metrics.HISTOGRAMS) :]
    depths = [int(n) for n in queue_raw[0::2]]
    heads = [decoded(raw) if raw else None for raw in queue_raw[1::2]]
    names = [decoded(raw) for raw in names_raw]

    waiting = [(lane, head) for lane, head in zip(lanes, heads, strict=True) if head]
    with conn.pipeline(transaction=False) as pipe:  # an empty pipeline sends nothing
        for name in names:
            pipe.get(worker_key(name))
        for _, head in waiting:
            pipe.hget(Job.key_for(head), "enqueued_at")
        replies = pipe.execute()
    beacons = [json.loads(raw) for raw in replies[: len(names)] if raw]
    enqueued = dict(zip((lane for lane, _ in waiting), replies[len(names) :], strict=True))

    now = time.time()
    return ServiceFigures(
        lanes={
            lane: LaneFigures(depth=depth, oldest_age=_age(enqueued.get(lane), now))
            for lane, depth in zip(lanes, depths, strict=True)
        },
        workers=[_worker(beacon) for beacon in beacons],
        counters=stats.parse(stats_raw),
        failures=metrics.failures(failures_raw),
        histograms=[
            (spec, metrics.histogram(spec, raw))
            for spec, raw in zip(metrics.HISTOGRAMS, histograms_raw, strict=True)
        ],
    )


def _age(enqueued: bytes | str | None, now: float) -> float:
    if not enqueued:
        return 0.0  # an empty lane, or its head job deleted between the two reads
    return max(0.0, now - utcparse(decoded(enqueued)).timestamp())


def _worker(beacon: dict[str, Any]) -> WorkerFigures:
    return WorkerFigures(
        name=str(beacon.get("name", "")),
        device=str(beacon.get("device") or ""),
        busy=bool(beacon.get("current_task")),
        model_load_seconds=float(beacon.get("load_time") or 0.0),
    )
