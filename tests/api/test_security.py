"""API key, CORS and startup warning, through the real app and Redis."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from loguru import logger

from src.api.main import create_app
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer

KEY = "s3cret-key-for-tests"
TASK = "2025-12-01_001_" + "0" * 24
# With the key, each route answers for itself: the lists are empty and the task does not exist.
PROTECTED = [
    ("GET", "/api/v1/asr/history", 200, None),
    ("GET", "/api/v1/asr/queue/status", 200, None),
    ("GET", "/api/v1/stats", 200, None),
    ("GET", f"/api/v1/asr/result/{TASK}", 404, "Task not found"),
    ("GET", f"/api/v1/asr/audio/{TASK}", 404, "Recording not found"),
    ("POST", f"/api/v1/asr/retry/{TASK}", 404, "Task not found"),
    ("DELETE", f"/api/v1/asr/task/{TASK}", 404, "Task not found"),
]


@pytest.fixture
def secured(redis_server: RedisServer, storage: Path, conn: object):
    settings = make_settings(redis_server.port, storage, api_key=KEY)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("method", "path", "status", "error"), PROTECTED)
def test_protected_routes_need_the_key(
    secured: TestClient, method: str, path: str, status: int, error: str | None
):
    for headers in ({}, {"X-API-Key": "wrong"}, {"Authorization": "Bearer wrong"}):
        resp = secured.request(method, path, headers=headers)
        assert resp.status_code == 401, (method, path, headers)
        assert resp.json() == {"error": "Missing or invalid API key"}
    for headers in ({"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}):
        ok = secured.request(method, path, headers=headers)
        assert ok.status_code == status, (method, path, headers, ok.text)
        if error is not None:
            assert ok.json() == {"error": error, "task_id": TASK}


def test_submit_needs_the_key_and_stores_nothing_without_it(secured: TestClient, storage: Path):
    with open(SPEECH_WAV, "rb") as fh:
        resp = secured.post("/api/v1/asr/submit", files={"audio": ("a.wav", fh)})
    assert resp.status_code == 401
    assert not (storage / "recordings").exists() or not list((storage / "recordings").iterdir())
    with open(SPEECH_WAV, "rb") as fh:
        resp = secured.post(
            "/api/v1/asr/submit", files={"audio": ("a.wav", fh)}, headers={"X-API-Key": KEY}
        )
    assert resp.status_code == 200


def test_health_and_docs_stay_open(secured: TestClient):
    assert secured.get("/api/v1/health").status_code in (200, 503)
    assert secured.get("/docs").status_code == 200
    spec = secured.get("/openapi.json").json()
    assert {"HTTPBearer", "APIKeyHeader"} <= set(spec["components"]["securitySchemes"])


def test_cors_is_closed_by_default_and_opens_per_setting(redis_server: RedisServer, storage: Path):
    origin = {"Origin": "https://bot.example", "Access-Control-Request-Method": "GET"}
    with TestClient(create_app(make_settings(redis_server.port, storage))) as client:
        resp = client.options("/api/v1/asr/history", headers=origin)
        assert "access-control-allow-origin" not in resp.headers
    settings = make_settings(redis_server.port, storage, cors_origins=["https://bot.example"])
    with TestClient(create_app(settings)) as client:
        resp = client.options("/api/v1/asr/history", headers=origin)
        assert resp.headers["access-control-allow-origin"] == "https://bot.example"


def test_warns_when_bound_to_the_network_without_a_key(redis_server: RedisServer, storage: Path):
    cases = [("0.0.0.0", None, True), ("127.0.0.1", None, False), ("0.0.0.0", KEY, False)]
    for i, (host, key, warned) in enumerate(cases):
        where = storage / str(i)
        settings = make_settings(redis_server.port, where, api_host=host, api_key=key)
        with TestClient(create_app(settings)):
            pass
        logger.complete()  # file sinks write from a queue
        log = (where / "logs" / "asr_api.log").read_text()
        assert ("API_KEY is not set" in log) is warned, (host, key)


def test_error_bodies_leak_no_internals(secured: TestClient):
    resp = secured.get("/api/v1/asr/result/" + "x" * 100, headers={"X-API-Key": KEY})
    assert resp.status_code == 422
    assert "Traceback" not in resp.text and "/work" not in resp.text and "redis" not in resp.text
