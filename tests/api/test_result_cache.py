"""The result cache through the ASGI app on a real Redis: the first upload is transcribed by a real
ASRWorker serving real `process_task` jobs (a stand-in engine that counts its passes), and an
identical second upload is answered from that result at once, as a new task, never queued.
What misses: other hotwords or language, other bytes, a deleted source, an expired entry."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import Job

from src.api.main import create_app
from src.config import Settings
from src.engine.interface import EngineInput, EngineOutput
from src.queue.job_queue import get_queue
from src.records.redis_client import result_cache_key
from src.vocabulary import Sentence
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV
from tests.support.fixtures import history_lines, make_settings
from tests.support.processes import RedisServer, wait_for
from tests.support.worker_jobs import CountingEngine, serve

SUBMIT = "/api/v1/asr/submit"
SENTENCES = [Sentence(text="今天天气很好。", start=380, end=3100)]


class TranscribingEngine(CountingEngine):
    """CountingEngine with a transcript that names the request, so a copy can be told apart."""

    def _one(self, item: EngineInput) -> EngineOutput:  # type: ignore[override]
        return EngineOutput(
            text=f"transcript {item.language} {' '.join(item.hotwords)}".strip(),
            duration=2.7,
            processing_time=0.5,
            sentences=SENTENCES,
            hotwords=list(item.hotwords),
        )

    def process_batch(self, items: Sequence[EngineInput]) -> list[EngineOutput | Exception]:
        self.passes.append(len(items))
        return [self._one(item) for item in items]


def cache_settings(port: int, storage: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {"result_cache_seconds": 3600, "asr_batch_jobs": 1}
    values.update(overrides)
    settings = make_settings(port, storage, **values)
    settings.recordings_dir.mkdir(parents=True, exist_ok=True)
    return settings


@pytest.fixture
def settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    return cache_settings(redis_server.port, storage)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def post(client: TestClient, path: Path = SPEECH_WAV, **form: str) -> dict[str, Any]:
    with open(path, "rb") as fh:
        resp = client.post(SUBMIT, files={"audio": (path.name, fh)}, data=form)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def transcribed(client: TestClient, settings: Settings, path: Path = SPEECH_WAV, **form: str):
    """Submit and let a real worker run the job: the source every later hit copies."""
    first = post(client, path, **form)
    assert first["status"] == "queued" and first["cached"] is False
    engine = TranscribingEngine(max_batch=1)
    serve(settings, engine)
    assert engine.passes == [1]
    result = client.get(first["result_url"]).json()
    assert result["status"] == "done" and result["cached"] is False
    return result


def queued_jobs(conn: redis.Redis, settings: Settings) -> int:
    return get_queue(conn, settings).count


def test_an_identical_upload_is_done_at_once_with_the_first_result_and_no_job(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    first = transcribed(client, settings, hotwords="天气")
    fingerprint = conn.keys(result_cache_key("*"))
    assert len(fingerprint) == 1
    assert 3500 < conn.ttl(fingerprint[0]) <= 3600  # min(RESULT_CACHE_SECONDS, TASK_TTL_SECONDS)

    second = post(client, hotwords="天气")
    assert second["task_id"] != first["task_id"]
    assert second["status"] == "done" and second["cached"] is True
    assert second["position"] == 0 and second["estimated_wait"] == 0
    assert not Job.exists(second["task_id"], connection=conn)
    assert queued_jobs(conn, settings) == 0

    result = client.get(second["result_url"]).json()
    assert result["cached"] is True and result["status"] == "done" and result["progress"] == 100
    for key in ("text", "duration", "sentences", "hotwords"):
        assert result[key] == first[key], key
    assert result["text"] == "transcript zh 天气"
    assert "rtf" not in result  # no worker ran it

    engine = TranscribingEngine(max_batch=1)
    serve(settings, engine)
    assert engine.passes == []  # nothing was queued for it

    lines = history_lines(settings, second["task_id"])
    assert len(lines) == 1  # written once, by the submit
    assert lines[0]["cached"] is True and lines[0]["cached_from"] == first["task_id"]
    assert lines[0]["status"] == "success" and lines[0]["text"] == first["text"]
    assert history_lines(settings, first["task_id"])[0]["cached"] is False
    records = client.get("/api/v1/asr/history").json()["records"]
    assert [(r["task_id"], r["cached"]) for r in records] == [
        (second["task_id"], True),
        (first["task_id"], False),
    ]

    stats = client.get("/api/v1/stats").json()
    assert (stats["submitted"], stats["done"], stats["cached"]) == (2, 1, 1)

    # No copy of the upload is kept; its audio is the source's, byte for byte.
    assert [p.name for p in settings.recordings_dir.iterdir()] == [f"{first['task_id']}.wav"]
    audio = client.get(f"/api/v1/asr/audio/{second['task_id']}")
    assert audio.status_code == 200 and audio.content == SPEECH_WAV.read_bytes()


def test_a_reordered_hotword_list_hits_and_other_options_or_bytes_miss(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    first = transcribed(client, settings, hotwords="今天 天气")
    assert post(client, hotwords="天气,今天")["cached"] is True
    # The configured file's words are applied too: the same applied set hits, another misses.
    settings.asr_hotwords_path.write_text("今天\n")
    assert post(client, hotwords="今天 天气")["cached"] is True
    settings.asr_hotwords_path.write_text("明天\n")
    assert post(client, hotwords="今天 天气")["cached"] is False
    settings.asr_hotwords_path.unlink()
    misses = [
        post(client, hotwords="天气"),
        post(client, hotwords="今天 天气", language="en"),
        post(client, SPEECH_OGG, hotwords="今天 天气"),
    ]
    assert all(m["status"] == "queued" and m["cached"] is False for m in misses)
    assert queued_jobs(conn, settings) == 4  # the edited file's miss, and these three
    assert client.get(f"/api/v1/asr/result/{first['task_id']}").json()["cached"] is False


def test_a_deleted_source_misses_and_its_entry_goes(
    client: TestClient, settings: Settings, conn: redis.Redis
):
    first = transcribed(client, settings)
    hit = post(client)
    assert hit["cached"] is True
    assert client.delete(f"/api/v1/asr/task/{first['task_id']}").status_code == 200

    again = post(client)
    assert again["status"] == "queued" and again["cached"] is False
    assert Job.exists(again["task_id"], connection=conn)
    assert conn.keys(result_cache_key("*")) == []  # the stale entry was dropped on lookup
    # The earlier hit keeps its own copy of the transcript; the audio went with its source.
    assert client.get(hit["result_url"]).json()["text"] == first["text"]
    assert client.get(f"/api/v1/asr/audio/{hit['task_id']}").status_code == 404


def test_an_expired_entry_misses(redis_server: RedisServer, storage: Path, conn: redis.Redis):
    settings = cache_settings(redis_server.port, storage, result_cache_seconds=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        transcribed(client, settings)
        wait_for(lambda: not conn.keys(result_cache_key("*")), 5, 0.05, "cache entry to expire")
        late = post(client)
    assert late["status"] == "queued" and late["cached"] is False


def test_retention_of_the_source_recording_does_not_break_a_hit(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
):
    settings = cache_settings(redis_server.port, storage, max_recordings=1)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = transcribed(client, settings)
        transcribed(client, settings, SPEECH_OGG)  # retention removes the first recording
        assert not (settings.recordings_dir / f"{first['task_id']}.wav").exists()
        hit = post(client)
        assert hit["cached"] is True
        assert client.get(hit["result_url"]).json()["text"] == first["text"]
        assert client.get(f"/api/v1/asr/audio/{hit['task_id']}").status_code == 404


def test_with_the_cache_off_an_identical_upload_is_queued(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
):
    settings = cache_settings(redis_server.port, storage, result_cache_seconds=0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        transcribed(client, settings)
        assert conn.keys(result_cache_key("*")) == []  # the worker offers nothing either
        assert post(client)["status"] == "queued"


def test_the_openai_face_is_answered_from_the_cache_without_a_worker(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
):
    settings = cache_settings(redis_server.port, storage, openai_wait_seconds=1.0)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        first = transcribed(client, settings)
        resp = client.post(
            "/v1/audio/transcriptions",
            data={"model": "whisper-1"},
            files={"file": ("voice.wav", SPEECH_WAV.read_bytes())},
        )
        # No worker runs now: a miss would have waited out OPENAI_WAIT_SECONDS (504).
        assert resp.status_code == 200, resp.text
        assert resp.json()["text"] == first["text"]
        task = client.get(f"/api/v1/asr/result/{resp.headers['x-task-id']}").json()
        assert task["cached"] is True
