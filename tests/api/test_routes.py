"""API behaviour through the ASGI app with a real Redis and RQ, before any worker runs a job."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from redis.sentinel import MasterNotFoundError
from rq import Queue
from rq.job import Job

from src.api.main import create_app
from src.config import Settings
from src.records.redis_client import api_connection
from src.records.task_store import TASK_ID_RE
from tests.support.audio_samples import BAD_INPUTS, SPEECH_OGG, SPEECH_WAV, make_bad_input
from tests.support.fixtures import make_settings
from tests.support.processes import ROOT, RedisServer, free_port

SUBMIT = "/api/v1/asr/submit"


def submit(client: TestClient, path: Path, name: str | None = None, **form: str):
    with open(path, "rb") as fh:
        return client.post(SUBMIT, files={"audio": (name or path.name, fh)}, data=form)


def assert_nothing_stored(conn: redis.Redis, settings: Settings) -> None:
    recordings = settings.recordings_dir
    assert not recordings.exists() or list(recordings.iterdir()) == []
    assert list(conn.scan_iter("asr:task:*")) == []
    assert Queue(settings.rq_queue_name, connection=conn).count == 0
    assert conn.zcard("asr:audio:index") == 0


def test_submit_queues_a_job_by_dotted_path(
    client: TestClient, conn: redis.Redis, settings: Settings
):
    resp = submit(client, SPEECH_OGG, "voice.oga", language="zh", batch_size="300")
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert TASK_ID_RE.match(body["task_id"])
    assert body["status"] == "queued"
    assert body["position"] == 1
    assert body["estimated_wait"] > 0
    assert body["result_url"] == f"/api/v1/asr/result/{body['task_id']}"

    job = Job.fetch(body["task_id"], connection=conn)
    assert job.func_name == "src.worker.jobs.process_task"
    assert job.args == (body["task_id"],)
    assert job.timeout == settings.rq_worker_timeout

    stored = list(settings.recordings_dir.iterdir())
    assert [p.name for p in stored] == [f"{body['task_id']}.ogg"]  # extension from content
    assert stored[0].read_bytes() == SPEECH_OGG.read_bytes()
    assert conn.zscore("asr:audio:index", stored[0].name) is not None

    result = client.get(body["result_url"]).json()
    assert result["status"] == "queued"
    assert result["position"] == 1
    assert result["filename"] == "voice.oga"

    second = submit(client, SPEECH_WAV).json()
    assert second["position"] == 2
    assert second["task_id"].split("_")[1] == "002"  # per-day counter


def test_task_ids_are_unguessable(client: TestClient):
    ids = {submit(client, SPEECH_WAV).json()["task_id"] for _ in range(3)}
    randoms = {i.rsplit("_", 1)[1] for i in ids}
    assert len(randoms) == 3 and all(len(r) == 24 for r in randoms)


@pytest.mark.parametrize("bad", sorted(BAD_INPUTS))
def test_bad_audio_is_rejected_and_nothing_is_kept(
    bad: str, client: TestClient, conn: redis.Redis, settings: Settings, tmp_path: Path
):
    path = make_bad_input(bad, SPEECH_WAV, tmp_path)
    resp = submit(client, path)
    assert resp.status_code == 400, resp.text
    body = resp.json()
    assert body["error"] == "Invalid file format"
    assert body["reason"] == BAD_INPUTS[bad]
    assert {"wav", "mp3", "m4a", "flac", "ogg"} <= set(body["supported_formats"])
    assert_nothing_stored(conn, settings)


def test_invalid_fields_get_422(client: TestClient, conn: redis.Redis, settings: Settings):
    cases = [
        {"language": "klingon"},
        {"batch_size": "0"},
        {"batch_size": "-5"},
        {"batch_size": "many"},
        {"batch_size": "99999999"},
        {"hotwords": "http://example.invalid/x.txt"},
    ]
    for form in cases:
        resp = submit(client, SPEECH_WAV, **form)
        assert resp.status_code == 422, (form, resp.text)
        assert "error" in resp.json()
    missing = client.post(SUBMIT, data={"language": "zh"})
    assert missing.status_code == 422
    assert missing.json()["details"][0]["field"].endswith("audio")
    assert_nothing_stored(conn, settings)


def test_upload_over_the_cap_is_413(redis_server: RedisServer, storage: Path, conn: redis.Redis):
    settings = make_settings(redis_server.port, storage, max_upload_bytes=50_000)
    with TestClient(create_app(settings)) as client:
        resp = submit(client, SPEECH_WAV)  # 211 KB
    assert resp.status_code == 413
    assert resp.json()["error"] == "File too large"
    assert_nothing_stored(conn, settings)


def test_audio_over_the_duration_limit_is_413(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
):
    settings = make_settings(redis_server.port, storage, asr_max_audio_seconds=2)
    with TestClient(create_app(settings)) as client:
        resp = submit(client, SPEECH_WAV)  # 6.6 s
    assert resp.status_code == 413
    assert "limit" in resp.json()["error"]
    assert_nothing_stored(conn, settings)


@pytest.mark.parametrize(
    "task_id", ["..%2Fx", "*", "%3F", "asr:task:*", "x" * 10_000, "2025-12-01_001_nothex"]
)
def test_malformed_task_ids_are_rejected(client: TestClient, task_id: str):
    for method, path in [
        ("GET", "/api/v1/asr/result/{}"),
        ("GET", "/api/v1/asr/audio/{}"),
        ("POST", "/api/v1/asr/retry/{}"),
        ("DELETE", "/api/v1/asr/task/{}"),
    ]:
        resp = client.request(method, path.format(task_id))
        assert resp.status_code in (404, 422), (method, path, resp.status_code)
        assert "error" in resp.json()
        assert len(resp.text) < 500


def test_unknown_task_is_404_everywhere(client: TestClient):
    unknown = "2025-12-01_001_" + "0" * 24
    for method, path in [
        ("GET", "/api/v1/asr/result/{}"),
        ("GET", "/api/v1/asr/audio/{}"),
        ("POST", "/api/v1/asr/retry/{}"),
        ("DELETE", "/api/v1/asr/task/{}"),
    ]:
        resp = client.request(method, path.format(unknown))
        assert resp.status_code == 404, (method, path)
        assert resp.json()["task_id"] == unknown


def test_retry_of_a_queued_task_is_409(client: TestClient):
    task_id = submit(client, SPEECH_WAV).json()["task_id"]
    resp = client.post(f"/api/v1/asr/retry/{task_id}")
    assert resp.status_code == 409
    assert resp.json()["status"] == "queued"


def test_delete_removes_task_job_and_recording(
    client: TestClient, conn: redis.Redis, settings: Settings
):
    task_id = submit(client, SPEECH_WAV).json()["task_id"]
    resp = client.delete(f"/api/v1/asr/task/{task_id}")
    assert resp.status_code == 200
    assert resp.json() == {"task_id": task_id, "deleted": True, "recording_deleted": True}
    assert_nothing_stored(conn, settings)
    assert client.delete(f"/api/v1/asr/task/{task_id}").status_code == 404


def test_audio_download_is_byte_identical(client: TestClient):
    task_id = submit(client, SPEECH_OGG, "note.ogg").json()["task_id"]
    resp = client.get(f"/api/v1/asr/audio/{task_id}")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "audio/ogg"
    assert resp.content == SPEECH_OGG.read_bytes()
    assert "note.ogg" in resp.headers["content-disposition"]


def test_health_is_503_while_no_worker_is_ready(client: TestClient):
    resp = client.get("/api/v1/health")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["model_loaded"] is False
    assert body["redis_connected"] is True
    assert body["error"].startswith("No worker has reported yet")


def test_queue_status_history_and_stats_shapes(client: TestClient):
    submit(client, SPEECH_WAV)
    status = client.get("/api/v1/asr/queue/status").json()
    lanes = {"high": 0, "normal": 1, "low": 0}
    assert status == {
        **{"queued": 1, "processing": 0, "failed": 0, "workers": 0, "workers_busy": 0},
        "lanes": lanes,
    }
    assert client.get("/api/v1/asr/history").json() == {"total": 0, "records": []}
    stats = client.get("/api/v1/stats").json()
    assert stats["submitted"] == 1 and stats["recordings"] == 1
    assert stats["storage_bytes"] >= SPEECH_WAV.stat().st_size


def test_every_endpoint_answers_503_json_while_redis_is_down(storage: Path, tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    settings = make_settings(server.port, storage)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        ok = submit(client, SPEECH_WAV)
        assert ok.status_code == 200
        task_id = ok.json()["task_id"]
        server.stop()
        files_before = sorted(p.name for p in settings.recordings_dir.iterdir())
        calls = [
            ("GET", f"/api/v1/asr/result/{task_id}"),
            ("GET", "/api/v1/asr/history"),
            ("GET", f"/api/v1/asr/audio/{task_id}"),
            ("GET", "/api/v1/asr/queue/status"),
            ("POST", f"/api/v1/asr/retry/{task_id}"),
            ("DELETE", f"/api/v1/asr/task/{task_id}"),
            ("GET", "/api/v1/stats"),
            ("GET", "/api/v1/health"),
        ]
        for method, path in calls:
            resp = client.request(method, path)
            assert resp.status_code == 503, (method, path, resp.text)
            body = resp.json()
            assert "error" in body or body.get("redis_connected") is False
            assert "Traceback" not in resp.text and "6379" not in resp.text
        resp = submit(client, SPEECH_WAV)
        assert resp.status_code == 503
        assert sorted(p.name for p in settings.recordings_dir.iterdir()) == files_before
        assert client.get("/api/v1/health").json()["redis_connected"] is False

        # Recovers without restarting the API.
        server = RedisServer(server.directory, port=server.port).start()
        try:
            resp = client.get(f"/api/v1/asr/result/{task_id}")
            assert resp.status_code == 200
            assert resp.json()["status"] == "queued"
        finally:
            server.stop()


def test_no_master_from_the_sentinels_is_a_503_json(storage: Path):
    """With REDIS_SENTINELS set the API asks them for the master; while none can name one (here
    none answers; mid-failover none knows a live master) redis-py raises MasterNotFoundError."""
    sentinels = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    settings = make_settings(free_port(), storage, redis_sentinels=sentinels)
    with pytest.raises(MasterNotFoundError):
        api_connection(settings).ping()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        resp = submit(client, SPEECH_WAV)
        assert resp.status_code == 503, resp.text
        assert "error" in resp.json() and "Traceback" not in resp.text
        assert client.get("/api/v1/asr/history").status_code == 503
        health = client.get("/api/v1/health")
        assert health.status_code == 503 and health.json()["redis_connected"] is False


def test_openapi_documents_every_endpoint(client: TestClient):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in [
        "/api/v1/asr/submit",
        "/api/v1/asr/result/{task_id}",
        "/api/v1/health",
        "/api/v1/asr/history",
        "/api/v1/asr/audio/{task_id}",
        "/api/v1/asr/queue/status",
        "/api/v1/asr/retry/{task_id}",
        "/api/v1/asr/task/{task_id}",
        "/api/v1/stats",
    ]:
        assert path in paths, path
    assert "404" in paths["/api/v1/asr/result/{task_id}"]["get"]["responses"]
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc").status_code == 200


def test_importing_the_api_does_not_import_torch_or_funasr():
    code = (
        "import sys, json; import src.api.main, src.api.routes, src.service.tasks; "
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'funasr', 'modelscope', 'src'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    modules = json.loads(out)
    assert not [m for m in modules if m.split(".")[0] in ("torch", "funasr", "modelscope")]
    assert "src.worker.jobs" not in modules and "src.asr.recognizer" not in modules
    assert "src.asr.engine" not in modules
