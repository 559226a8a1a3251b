"""src/results/metrics.py on a real Redis: what workers count, and how it reads back.

The counting must add up across worker processes (and hosts), so one test has several real
processes write at once and checks the totals to the unit.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest
import redis

from src.records.redis_client import FAILURES_KEY
from src.results import metrics
from src.results.metrics import BATCH, PROCESSING, RTF, WAIT, HistogramSpec
from tests.support.processes import RedisServer

SPEC = HistogramSpec("test_seconds", (0.5, 1, 60), "a test histogram")


def read(conn: redis.Redis, spec: HistogramSpec) -> metrics.HistogramValues:
    return metrics.histogram(spec, conn.hgetall(spec.key))


def test_a_value_counts_in_the_smallest_bucket_that_holds_it(conn: redis.Redis):
    with conn.pipeline() as pipe:
        for value in (0.0, 0.5, 0.75, 1.0, 59.9, 60.0, 60.5, 5000.0):
            metrics.observe(pipe, SPEC, value)
        pipe.execute()
    values = read(conn, SPEC)
    # Cumulative, as Prometheus wants: le=0.5 holds 0 and 0.5 (the bound itself is in).
    assert values.buckets == [(0.5, 2), (1.0, 4), (60.0, 6), (float("inf"), 8)]
    assert values.count == 8
    assert values.sum == 0.5 + 0.75 + 1.0 + 59.9 + 60.0 + 60.5 + 5000.0


def test_a_histogram_never_written_reads_as_zeros(conn: redis.Redis):
    values = read(conn, SPEC)
    assert values.buckets == [(0.5, 0), (1.0, 0), (60.0, 0), (float("inf"), 0)]
    assert (values.count, values.sum) == (0, 0.0)


def test_a_finished_job_writes_what_it_knows(conn: redis.Redis):
    with conn.pipeline() as pipe:
        metrics.record_done(pipe, waited=3.0, processing=1.5, rtf=0.02, batch=4)
        # Its batch's pass made this one's result (batch 0), and its wait is unknown.
        metrics.record_done(pipe, waited=None, processing=0.25, rtf=0.5, batch=0)
        pipe.execute()
    assert (read(conn, WAIT).count, read(conn, WAIT).sum) == (1, 3.0)
    assert (read(conn, PROCESSING).count, read(conn, PROCESSING).sum) == (2, 1.75)
    assert (read(conn, RTF).count, read(conn, RTF).sum) == (2, pytest.approx(0.52))
    batch = read(conn, BATCH)
    assert (batch.count, batch.sum) == (1, 4.0)
    assert dict(batch.buckets)[4.0] == 1 and dict(batch.buckets)[2.0] == 0


def test_failures_are_counted_by_reason_and_every_reason_reads_back(conn: redis.Redis):
    with conn.pipeline() as pipe:
        metrics.record_failure(pipe, "timeout", waited=70.0)
        metrics.record_failure(pipe, "timeout", waited=None)
        metrics.record_failure(pipe, "abandoned", waited=2.0)
        pipe.execute()
    failures = metrics.failures(conn.hgetall(FAILURES_KEY))
    assert failures == {
        "timeout": 2,
        "invalid_audio": 0,
        "recording_missing": 0,
        "engine_error": 0,
        "abandoned": 1,
        "other": 0,
    }
    wait = read(conn, WAIT)
    assert (wait.count, wait.sum) == (2, 72.0)
    assert dict(wait.buckets)[60.0] == 1  # the 70 s wait is above the alert's 60 s


def test_elapsed_is_none_when_unknown_or_out_of_order():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert metrics.elapsed(start, start + timedelta(seconds=2.5)) == 2.5
    assert metrics.elapsed(None, start) is None
    assert metrics.elapsed(start, None) is None
    # A job requeued after its worker died: enqueued again after its last start.
    assert metrics.elapsed(start + timedelta(seconds=1), start) is None


def _count_jobs(port: int, jobs: int) -> None:
    conn = redis.Redis(host="127.0.0.1", port=port)
    for i in range(jobs):
        with conn.pipeline(transaction=False) as pipe:
            metrics.record_done(pipe, waited=0.25, processing=2.0, rtf=0.01 * (i % 3), batch=1)
            metrics.record_failure(pipe, "engine_error", waited=0.5)
            pipe.execute()


def test_processes_counting_at_once_add_up_exactly(redis_server: RedisServer, conn: redis.Redis):
    processes, jobs = 4, 150
    context = multiprocessing.get_context("fork")  # each with its own connection, as workers
    children = [
        context.Process(target=_count_jobs, args=(redis_server.port, jobs))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    total = processes * jobs
    assert read(conn, PROCESSING).count == total
    assert read(conn, PROCESSING).sum == 2.0 * total
    assert read(conn, WAIT).count == 2 * total
    assert read(conn, WAIT).sum == (0.25 + 0.5) * total
    assert read(conn, BATCH).buckets[0] == (1.0, total)
    assert metrics.failures(conn.hgetall(FAILURES_KEY))["engine_error"] == total
