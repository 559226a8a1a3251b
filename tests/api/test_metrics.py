"""GET /metrics through the real app and Redis: HTTP figures by route template, the queue as Redis
holds it, the API key, and a Redis outage. The figures after real worker jobs are checked in
tests/system/test_metrics_service.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from src.api.main import create_app
from src.results.metrics import FAILURE_REASONS
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings, submit
from tests.support.processes import RedisServer, free_port
from tests.support.prometheus import Scrape

KEY = "metrics-key-for-tests"
RESULT = "/api/v1/asr/result/{task_id}"


def scrape(client: TestClient, **headers: str) -> Scrape:
    resp = client.get("/metrics", headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    return Scrape(resp.text)


def test_requests_are_counted_by_route_template_and_status(client: TestClient):
    for n in (1, 2, 3):
        assert client.get(f"/api/v1/asr/result/2025-12-01_00{n}_{'0' * 24}").status_code == 404
    assert client.get("/api/v1/asr/result/not-an-id").status_code == 422
    assert client.get("/no/such/path").status_code == 404
    assert client.post("/api/v1/health").status_code == 405
    assert client.request("BREW", "/api/v1/health").status_code == 405  # a made-up method
    metrics = scrape(client)
    count = "asr_http_requests_total"
    assert metrics.value(count, method="GET", route=RESULT, status="404") == 3
    assert metrics.value(count, method="GET", route=RESULT, status="422") == 1
    assert metrics.value(count, method="GET", route="unmatched", status="404") == 1
    assert metrics.value(count, method="POST", route="/api/v1/health", status="405") == 1
    assert metrics.value(count, method="other", route="/api/v1/health", status="405") == 1
    # One series per route, however many ids were asked for.
    assert metrics.labels(count, "route") == {RESULT, "unmatched", "/api/v1/health"}
    took = "asr_http_request_duration_seconds"
    assert metrics.value(f"{took}_count", method="GET", route=RESULT) == 4
    assert metrics.value(f"{took}_bucket", method="GET", route=RESULT, le="+Inf") == 4
    assert 0 < metrics.value(f"{took}_sum", method="GET", route=RESULT) < 10
    # The scrape itself shows up in the next one.
    assert scrape(client).value(count, method="GET", route="/metrics", status="200") == 1


def test_an_upload_refused_before_routing_still_counts_under_its_route(client: TestClient):
    huge = str(200 * 1024**2)  # over MAX_UPLOAD_BYTES: the body guard answers, not the route
    resp = client.post(
        "/api/v1/asr/submit",
        content=b"x",
        headers={"Content-Length": huge, "Content-Type": "multipart/form-data; boundary=b"},
    )
    assert resp.status_code == 413
    metrics = scrape(client)
    assert (
        metrics.value(
            "asr_http_requests_total", method="POST", route="/api/v1/asr/submit", status="413"
        )
        == 1
    )


def test_queue_and_workers_are_read_from_redis(client: TestClient):
    ids = [submit(client, SPEECH_WAV) for _ in range(2)]  # no worker runs: they wait
    metrics = scrape(client)
    assert metrics.value("asr_redis_connected") == 1
    assert metrics.value("asr_queue_depth", lane="normal") == 2
    assert 0 <= metrics.value("asr_queue_oldest_age_seconds", lane="normal") < 30
    assert metrics.value("asr_tasks_submitted_total") == 2
    assert metrics.value("asr_workers_ready") == 0 and metrics.value("asr_workers_busy") == 0
    assert metrics.labels("asr_job_failures_total", "reason") == set(FAILURE_REASONS)
    for name in ("job_wait_seconds", "job_processing_seconds", "job_rtf", "batch_size"):
        assert metrics.families[f"asr_{name}"].type == "histogram"
        assert metrics.value(f"asr_{name}_count") == 0
    client.delete(f"/api/v1/asr/task/{ids[0]}")
    assert scrape(client).value("asr_queue_depth", lane="normal") == 1


def test_openmetrics_when_the_scraper_asks_for_it(client: TestClient):
    resp = client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/openmetrics-text")
    names = {family.name for family in openmetrics_families(resp.text)}
    assert {"asr_queue_depth", "asr_job_failures", "asr_job_wait_seconds"} <= names


@pytest.fixture
def secured(redis_server: RedisServer, storage: Path, conn: object):
    settings = make_settings(redis_server.port, storage, api_key=KEY)
    with TestClient(create_app(settings)) as client:
        yield client


def test_metrics_need_the_api_key_when_one_is_set(secured: TestClient):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        resp = secured.get("/metrics", headers=headers)
        assert resp.status_code == 401
        assert resp.json() == {"error": "Missing or invalid API key"}
    # Prometheus sends the key as a bearer token (authorization: in the scrape config).
    metrics = scrape(secured, Authorization=f"Bearer {KEY}")
    assert metrics.value("asr_redis_connected") == 1
    assert (
        scrape(secured, **{"X-API-Key": KEY}).value(
            "asr_http_requests_total", method="GET", route="/metrics", status="401"
        )
        == 3
    )


def test_redis_down_still_answers_with_the_http_figures(storage: Path):
    settings = make_settings(free_port(), storage)  # nothing listens there
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        client.get("/api/v1/asr/queue/status")  # 503: Redis is unreachable
        resp = client.get("/metrics")
        assert resp.status_code == 200
        metrics = Scrape(resp.text)
    assert metrics.value("asr_redis_connected") == 0
    assert "asr_queue_depth" not in metrics.families  # unknown, not zero
    assert (
        metrics.value(
            "asr_http_requests_total",
            method="GET",
            route="/api/v1/asr/queue/status",
            status="503",
        )
        == 1
    )
