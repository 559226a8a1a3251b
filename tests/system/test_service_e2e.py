"""The service end to end: the ASGI app, a real Redis, RQ and two real worker processes running
the real FunASR pipeline on the tiny model directories."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV, make_long, speech_spans
from tests.support.fixtures import Service
from tests.support.processes import WorkerProcess, service_env, wait_for

pytestmark = pytest.mark.slow

SUBMIT = "/api/v1/asr/submit"


def submit(client: TestClient, path: Path, **form: str) -> str:
    with open(path, "rb") as fh:
        resp = client.post(SUBMIT, files={"audio": (path.name, fh)}, data=form)
    assert resp.status_code == 200, resp.text
    return resp.json()["task_id"]


def wait_finished(client: TestClient, task_id: str, timeout: float = 120) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        body = client.get(f"/api/v1/asr/result/{task_id}").json()
        return body if body["status"] in ("done", "failed") else None

    return wait_for(finished, timeout, 0.1, f"task {task_id}")  # type: ignore[return-value]


@pytest.fixture(scope="module")
def api(service: Service):
    with service.app_client() as client:
        yield client


def test_health_reports_both_workers_ready(api: TestClient):
    resp = api.get("/api/v1/health")
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "ready"
    assert body["model_loaded"] is True and body["redis_connected"] is True
    assert body["workers_active"] == 2
    assert sorted(w["name"] for w in body["workers"]) == ["worker-1", "worker-2"]
    assert all(w["device"] == "cpu" for w in body["workers"])


@pytest.mark.parametrize("sample", [SPEECH_WAV, SPEECH_OGG], ids=["wav", "ogg-opus"])
def test_submit_poll_done(api: TestClient, service: Service, sample: Path):
    task_id = submit(api, sample, hotwords="今天 天气")
    result = wait_finished(api, task_id)
    assert result["status"] == "done", result
    assert result["progress"] == 100
    assert isinstance(result["text"], str)
    expected = speech_spans()["duration_ms"] / 1000
    assert abs(result["duration"] - expected) < 0.1
    assert result["created_at"].endswith("Z") or "+00:00" in result["created_at"]
    assert result["audio_url"] == f"/api/v1/asr/audio/{task_id}"
    assert {"今天", "天气"} <= set(result["hotwords"])
    for sentence in result["sentences"]:
        assert 0 <= sentence["start"] <= sentence["end"] <= expected * 1000 + 50
    assert result["rtf"] > 0
    audio = api.get(result["audio_url"])
    assert audio.status_code == 200 and audio.content == sample.read_bytes()


def test_progress_moves_through_the_stages(api: TestClient, tmp_path: Path):
    long_clip = make_long(SPEECH_WAV, tmp_path, seconds=240, fmt="flac")
    task_id = submit(api, long_clip)
    seen: list[tuple[str, int, str | None]] = []
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        body = api.get(f"/api/v1/asr/result/{task_id}").json()
        seen.append((body["status"], body["progress"], body.get("stage")))
        if body["status"] in ("done", "failed"):
            break
        time.sleep(0.02)
    assert seen[-1][0] == "done", seen[-1]
    running = [p for status, p, _ in seen if status == "processing"]
    assert any(0 < p < 100 for p in running), seen
    assert len(set(running)) >= 3, sorted(set(running))
    progress = [p for _, p, _ in seen]
    assert progress == sorted(progress), "progress went backwards"
    assert "recognition" in {stage for _, _, stage in seen}


def test_queue_status_shows_two_busy_workers(api: TestClient, tmp_path: Path):
    long_clip = make_long(SPEECH_WAV, tmp_path, seconds=240, fmt="flac")
    ids = [submit(api, long_clip) for _ in range(3)]

    seen: list[dict[str, int]] = []

    def both_busy() -> dict[str, int] | None:
        status = api.get("/api/v1/asr/queue/status").json()
        if not seen or seen[-1] != status:
            seen.append(status)
        return status if status["workers_busy"] == 2 else None

    try:
        status = wait_for(both_busy, 60, 0.05, "two busy workers")
    except TimeoutError as exc:
        raise AssertionError(f"queue status never showed 2 busy workers: {seen}") from exc
    assert status["workers"] == 2 and status["processing"] == 2  # type: ignore[index]
    for task_id in ids:
        assert wait_finished(api, task_id, 300)["status"] == "done"


def test_twelve_jobs_history_jsonl_and_retention(api: TestClient, service: Service):
    ids = [submit(api, SPEECH_OGG if i % 2 else SPEECH_WAV) for i in range(12)]
    finished_at = {}
    for task_id in ids:
        body = wait_finished(api, task_id)
        assert body["status"] == "done"
        finished_at[task_id] = datetime.fromisoformat(body["finished_at"])
    # Two workers finish out of submission order: the history goes by finish time.
    newest_first = sorted(ids, key=finished_at.__getitem__, reverse=True)[:10]

    history = api.get("/api/v1/asr/history", params={"limit": 50}).json()
    assert history["total"] == 10
    assert [r["task_id"] for r in history["records"]] == newest_first
    stored = service.redis_server.client().lrange("asr:history:latest", 0, -1)
    assert [json.loads(raw)["task_id"] for raw in stored] == newest_first
    assert all(r["status"] == "success" for r in history["records"])
    assert history["records"][0]["audio_url"].startswith("/api/v1/asr/audio/")

    jsonl = service.settings.history_file
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    ours = [line for line in lines if line["task_id"] in ids]
    assert len(ours) == 12
    for line in ours:
        assert set(line) >= {
            "task_id",
            "file",
            "text",
            "created_at",
            "duration",
            "status",
            "worker_id",
            "error",
            "rtf",
        }
        assert line["worker_id"] in ("worker-1", "worker-2")

    # The operator's jq queries from the design work on the file.
    if shutil.which("jq"):
        failed = subprocess.run(
            ["jq", "-c", 'select(.status=="failed")', str(jsonl)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not [json.loads(x) for x in failed.splitlines() if json.loads(x)["task_id"] in ids]
        mean = subprocess.run(
            ["jq", "-s", "map(.duration)|add/length", str(jsonl)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert abs(float(mean) - sum(x["duration"] for x in lines) / len(lines)) < 1e-6

    recordings = sorted(p.name for p in service.settings.recordings_dir.iterdir())
    assert len(recordings) == 10
    index = sorted(
        m.decode() for m in service.redis_server.client().zrange("asr:audio:index", 0, -1)
    )
    assert index == recordings
    assert {Path(name).stem for name in recordings} == set(ids[-10:])


def test_delete_a_finished_task(api: TestClient, service: Service):
    task_id = submit(api, SPEECH_WAV)
    assert wait_finished(api, task_id)["status"] == "done"
    assert api.delete(f"/api/v1/asr/task/{task_id}").status_code == 200
    assert api.get(f"/api/v1/asr/result/{task_id}").status_code == 404
    assert api.get(f"/api/v1/asr/audio/{task_id}").status_code == 404
    assert task_id not in {r["task_id"] for r in api.get("/api/v1/asr/history").json()["records"]}
    assert not list(service.settings.recordings_dir.glob(f"{task_id}.*"))
    assert api.delete(f"/api/v1/asr/task/{task_id}").status_code == 404
    assert api.post(f"/api/v1/asr/retry/{task_id}").status_code == 404


def test_retry_of_a_done_task_is_409(api: TestClient):
    task_id = submit(api, SPEECH_WAV)
    assert wait_finished(api, task_id)["status"] == "done"
    resp = api.post(f"/api/v1/asr/retry/{task_id}")
    assert resp.status_code == 409 and resp.json()["status"] == "done"


def test_failed_job_then_retry_then_done(service: Service, model_dirs: Any, tmp_path: Path):
    """A worker whose settings reject the audio (ASR_MAX_AUDIO_SECONDS=1) fails the job with a
    clear error; after a worker with good settings takes over, retry -> done."""
    queue = "asr-faults"
    models = {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc}
    env = service_env(service.redis_server.port, service.storage, models, RQ_QUEUE_NAME=queue)
    settings = service.settings.model_copy(update={"rq_queue_name": queue})
    conn = service.redis_server.client()
    from src.api.main import create_app

    bad = WorkerProcess("worker-bad", {**env, "ASR_MAX_AUDIO_SECONDS": "1"}, tmp_path).start()
    try:
        bad.wait_ready(conn)
        with TestClient(create_app(settings)) as client:
            task_id = submit(client, SPEECH_WAV)
            failed = wait_finished(client, task_id)
            assert failed["status"] == "failed"
            assert "Invalid audio" in failed["error"] and "limit" in failed["error"]
            assert failed["retry_url"] == f"/api/v1/asr/retry/{task_id}"
            assert "Traceback" not in failed["error"]
    finally:
        bad.stop()

    good = WorkerProcess("worker-good", env, tmp_path).start()
    try:
        good.wait_ready(conn)
        with TestClient(create_app(settings)) as client:
            resp = client.post(f"/api/v1/asr/retry/{task_id}")
            assert resp.status_code == 200  # an idle worker may have it already: position 0
            assert (resp.json()["status"] == "processing") == (resp.json()["position"] == 0)
            done = wait_finished(client, task_id)
            assert done["status"] == "done" and done["attempts"] == 2
    finally:
        good.stop()

    lines = [json.loads(x) for x in service.settings.history_file.read_text().splitlines()]
    mine = [x for x in lines if x["task_id"] == task_id]
    assert [x["status"] for x in mine] == ["failed", "success"]
    assert "limit" in mine[0]["error"]
    errors = (service.settings.logs_dir / "asr_error.worker-bad.log").read_text()
    assert f"task={task_id} status=failed" in errors and "Traceback" in errors
