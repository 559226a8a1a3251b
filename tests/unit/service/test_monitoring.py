"""src/service/monitoring.py and the collector in src/api/metrics.py on a real Redis: what a
scrape reads, and that it reads it in two round trips however many workers and jobs there are."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
import redis
from prometheus_client import CollectorRegistry, generate_latest
from rq.job import Job
from rq.utils import now, utcformat

from src.api.metrics import ServiceCollector
from src.config import Settings
from src.queue import job_queue
from src.queue.job_queue import get_queue
from src.results import metrics, stats
from src.service import monitoring
from tests.support.processes import RedisServer
from tests.support.prometheus import Scrape
from tests.support.records import new_task

DEFAULT_LANE = "normal"


class RoundTrips(redis.connection.Connection):
    """A connection that counts what it sends: one packet per command, one per pipeline."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        RoundTrips.sent += 1
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(redis_server: RedisServer, conn: redis.Redis) -> redis.Redis:
    pool = redis.ConnectionPool(
        connection_class=RoundTrips, host="127.0.0.1", port=redis_server.port
    )
    client = redis.Redis(connection_pool=pool)
    client.ping()  # connect (and its hello) before counting
    RoundTrips.sent = 0
    return client


def beacon(conn: redis.Redis, name: str, **fields: object) -> None:
    payload = {"name": name, "model_loaded": True, **fields}
    job_queue.publish_readiness(conn, name, json.dumps(payload), 15)


def test_figures_are_what_redis_holds(conn: redis.Redis, settings: Settings):
    queue = get_queue(conn, settings)
    ids = [new_task(conn, settings, queue, n) for n in (1, 2, 3)]
    head = Job.key_for(ids[0])
    conn.hset(head, "enqueued_at", utcformat(now() - timedelta(seconds=90)))
    beacon(conn, "worker-1", device="cuda:0", load_time=12.5, current_task=ids[0])
    beacon(conn, "worker-2", device="cuda:1", load_time=3.25, current_task=None)
    beacon(conn, "worker-3", device="cpu", load_time=1.0)
    conn.delete("asr:worker:worker-3")  # its beacon expired: it is in the index, not ready
    with conn.pipeline() as pipe:
        stats.incr_submitted(pipe)
        stats.record_done(pipe, audio_seconds=10.0, processing_seconds=0.5)
        metrics.record_done(pipe, waited=90.0, processing=0.6, rtf=0.05, batch=1)
        metrics.record_failure(pipe, "timeout", waited=None)
        pipe.execute()

    figures = monitoring.read(conn, {DEFAULT_LANE: queue})

    assert figures.lanes[DEFAULT_LANE].depth == 3
    assert 89 < figures.lanes[DEFAULT_LANE].oldest_age < 120
    assert [(w.name, w.device, w.busy, w.model_load_seconds) for w in figures.workers] == [
        ("worker-1", "cuda:0", True, 12.5),
        ("worker-2", "cuda:1", False, 3.25),
    ]
    assert figures.counters == {
        "submitted": 1,
        "done": 1,
        "audio_seconds": 10.0,
        "processing_seconds": 0.5,
    }
    assert figures.failures["timeout"] == 1 and sum(figures.failures.values()) == 1
    histograms = {spec.name: values for spec, values in figures.histograms}
    assert histograms["job_wait_seconds"].count == 1
    assert dict(histograms["job_wait_seconds"].buckets)[60.0] == 0  # 90 s: above 60

    registry = CollectorRegistry()
    registry.register(ServiceCollector(conn, {DEFAULT_LANE: queue}))
    scrape = Scrape(generate_latest(registry).decode())
    assert scrape.value("asr_queue_depth", lane="normal") == 3
    assert scrape.value("asr_workers_ready") == 2 and scrape.value("asr_workers_busy") == 1
    load = "asr_worker_model_load_seconds"
    assert scrape.value(load, worker="worker-1", device="cuda:0") == 12.5
    assert scrape.value(load, worker="worker-2", device="cuda:1") == 3.25
    assert scrape.labels(load, "worker") == {"worker-1", "worker-2"}
    assert scrape.value("asr_jobs_done_total") == 1
    assert scrape.value("asr_audio_seconds_total") == 10.0
    assert scrape.value("asr_engine_seconds_total") == 0.5
    assert scrape.value("asr_job_failures_total", reason="timeout") == 1
    assert scrape.value("asr_job_wait_seconds_bucket", le="60.0") == 0
    assert scrape.value("asr_job_wait_seconds_bucket", le="120.0") == 1
    assert scrape.value("asr_job_rtf_sum") == 0.05


def test_an_empty_service_reads_as_zeros(conn: redis.Redis, settings: Settings):
    figures = monitoring.read(conn, {DEFAULT_LANE: get_queue(conn, settings)})
    assert figures.lanes[DEFAULT_LANE] == monitoring.LaneFigures(depth=0, oldest_age=0.0)
    assert figures.workers == [] and figures.counters == {}
    assert all(values.count == 0 for _, values in figures.histograms)


def test_two_round_trips_however_many_workers_and_jobs(counted: redis.Redis, settings: Settings):
    queue = get_queue(counted, settings)
    for n in range(1, 41):
        new_task(counted, settings, queue, n)
    for n in range(1, 21):
        beacon(counted, f"worker-{n}", device="cpu", load_time=1.0, current_task=None)
    RoundTrips.sent = 0
    figures = monitoring.read(counted, {DEFAULT_LANE: queue})
    assert RoundTrips.sent == 2
    assert figures.lanes[DEFAULT_LANE].depth == 40 and len(figures.workers) == 20
