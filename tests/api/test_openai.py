"""The OpenAI-compatible /v1 routes through the ASGI app on a real Redis, without workers: models,
every refusal in OpenAI's error shape (and the native shape kept elsewhere), the wait's timeout,
and the answer once a stand-in worker finishes the task. The official SDK against real workers
is tests/system/test_openai_sdk.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.asr.hotwords import MAX_HOTWORDS
from src.config import DEFAULT_ASR_MODEL, Settings
from src.queue.job_queue import get_lanes
from src.records import task_store
from src.vocabulary import Priority, TaskStatus
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import make_settings
from tests.support.processes import RedisServer, free_port
from tests.support.records import DONE
from tests.support.subtitles import parse_srt, parse_vtt

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
URL = "/v1/audio/transcriptions"


@pytest.fixture
def openai_settings(redis_server: RedisServer, storage: Path, conn: redis.Redis) -> Settings:
    return make_settings(
        redis_server.port,
        storage,
        api_key=KEY,
        openai_wait_seconds=1.0,
        openai_model_aliases=["whisper-1", "gpt-4o-transcribe"],
    )


@pytest.fixture
def api(openai_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(openai_settings), raise_server_exceptions=False) as client:
        yield client


def transcribe(api: TestClient, audio: bytes = b"", **form: Any):
    form.setdefault("model", "whisper-1")
    payload = audio or SPEECH_WAV.read_bytes()
    return api.post(URL, headers=AUTH, data=form, files={"file": ("voice.wav", payload)})


def openai_error(resp, status: int, param: str | None, code: str | None) -> dict[str, Any]:
    """The body is OpenAI's error object, and nothing else at the top level."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    error = body["error"]
    kind = "server_error" if status >= 500 else "invalid_request_error"
    assert {k: error[k] for k in ("type", "param", "code")} == {
        "type": kind,
        "param": param,
        "code": code,
    }
    assert isinstance(error["message"], str) and error["message"]
    return error


def test_models_lists_the_configured_model_and_its_aliases(api: TestClient):
    resp = api.get("/v1/models", headers=AUTH)
    assert resp.status_code == 200
    assert resp.json() == {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "asr-service"}
            for name in (DEFAULT_ASR_MODEL, "whisper-1", "gpt-4o-transcribe")
        ],
    }
    for name in (DEFAULT_ASR_MODEL, "whisper-1"):  # the ModelScope id has a slash in it
        assert api.get(f"/v1/models/{name}", headers=AUTH).json()["id"] == name
    error = openai_error(api.get("/v1/models/gpt-9", headers=AUTH), 404, "model", "model_not_found")
    assert "gpt-9" in error["message"]


def test_a_local_model_directory_is_listed_by_its_name_not_its_path(
    redis_server: RedisServer, storage: Path, conn: redis.Redis
):
    settings = make_settings(redis_server.port, storage, asr_model="/srv/models/paraformer-zh/")
    with TestClient(create_app(settings)) as client:
        ids = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert ids == ["paraformer-zh", "whisper-1"]


def test_an_unknown_model_is_refused_before_anything_is_stored(
    api: TestClient, conn: redis.Redis, openai_settings: Settings
):
    error = openai_error(transcribe(api, model="gpt-9"), 400, "model", "model_not_found")
    assert "`gpt-9`" in error["message"] and "/v1/models" in error["message"]
    assert conn.keys("asr:task:*") == []
    assert not openai_settings.recordings_dir.exists() or not any(
        openai_settings.recordings_dir.iterdir()
    )


@pytest.mark.parametrize(
    ("form", "param", "code"),
    [
        ({"response_format": "diarized_json"}, "response_format", None),
        ({"timestamp_granularities[]": ["segment", "word"]}, "timestamp_granularities", None),
        ({"stream": "true"}, "stream", "unsupported_value"),
        ({"temperature": "7"}, "temperature", None),
        ({"prompt": "fine, http://example.org"}, "prompt", None),
        ({"language": "fr"}, "language", "unsupported_language"),
    ],
)
def test_a_bad_field_is_a_400_naming_it(
    api: TestClient, conn: redis.Redis, form: dict[str, Any], param: str, code: str | None
):
    resp = transcribe(api, **form)
    if param == "timestamp_granularities":
        code = "unsupported_value"
    openai_error(resp, 400, param, code)
    assert conn.keys("asr:task:*") == []


def test_a_missing_field_is_a_400_not_fastapis_422(api: TestClient):
    resp = api.post(URL, headers=AUTH, files={"file": ("a.wav", b"RIFF")})
    error = openai_error(resp, 400, "model", None)
    assert "model" in error["message"] and "Field required" in error["message"]
    resp = api.post(URL, headers=AUTH, data={"model": "whisper-1"})
    openai_error(resp, 400, "file", None)


def test_the_prompt_refusal_says_it_is_read_as_hotwords(api: TestClient):
    error = openai_error(transcribe(api, prompt="a.txt"), 400, "prompt", None)
    assert "a.txt" in error["message"] and "hotwords" in error["message"]


def test_not_audio_is_a_400_with_the_native_details(api: TestClient):
    error = openai_error(transcribe(api, b"not audio at all"), 400, "file", "invalid_audio")
    assert error["reason"] == "not_audio" and "wav" in error["supported_formats"]


def test_the_api_key_is_required_and_refused_in_openai_shape(api: TestClient):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = api.get("/v1/models", headers=headers)
        openai_error(resp, 401, None, "invalid_api_key")
        assert resp.headers["www-authenticate"] == "Bearer"
    assert api.get("/v1/models", headers={"X-API-Key": KEY}).status_code == 200
    native = api.get("/api/v1/asr/queue/status", headers={"Authorization": "Bearer wrong"})
    assert native.status_code == 401
    assert native.json() == {"error": "Missing or invalid API key"}  # the native shape stays


def test_an_unexpected_error_is_a_500_without_a_traceback(
    api: TestClient, monkeypatch: pytest.MonkeyPatch
):
    def broken(_: Settings) -> list[str]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr("src.api.openai_routes.served_models", broken)
    error = openai_error(api.get("/v1/models", headers=AUTH), 500, None, None)
    assert error["message"] == "Internal server error"


def test_redis_away_is_a_503_in_openai_shape(storage: Path):
    settings = make_settings(free_port(), storage)  # nothing listens there
    with TestClient(create_app(settings)) as client:
        resp = transcribe(client)
    openai_error(resp, 503, None, None)
    assert resp.headers["retry-after"] == "5"


def test_a_task_not_done_in_time_is_a_504_that_names_it(
    api: TestClient, conn: redis.Redis, openai_settings: Settings
):
    started = time.monotonic()
    resp = transcribe(api, prompt="今天 天气")
    waited = time.monotonic() - started
    error = openai_error(resp, 504, None, "transcription_timeout")
    assert openai_settings.openai_wait_seconds <= waited < openai_settings.openai_wait_seconds + 2
    task_id = resp.headers["x-task-id"]
    assert resp.headers["x-should-retry"] == "false"  # a retry would transcribe it again
    assert error["task_id"] == task_id and task_id in error["message"]
    assert error["status"] == "queued"
    assert error["result_url"] == f"/api/v1/asr/result/{task_id}"
    native = api.get(error["result_url"], headers=AUTH).json()  # the task goes on
    assert native["status"] == "queued"
    record = task_store.load(conn, task_id)
    assert record is not None and record.hotwords == ["今天", "天气"]  # prompt -> hotwords


class StandInWorker(threading.Thread):
    """Marks the next queued task as a worker would, with `fields`: the wait is what is tested
    here (the real workers are in tests/system/test_openai_sdk.py)."""

    def __init__(self, conn: redis.Redis, settings: Settings, fields: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.queue = get_lanes(conn, settings)[Priority.HIGH]  # a synchronous caller's lane
        self.conn = conn
        self.fields = fields

    def run(self) -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not self.queue.job_ids:
            time.sleep(0.02)
        for task_id in self.queue.job_ids:
            task_store.update(self.conn, task_id, **self.fields)


@pytest.mark.parametrize("fmt", ["json", "verbose_json", "text", "srt", "vtt"])
def test_the_answer_once_the_task_is_done(
    api: TestClient, conn: redis.Redis, openai_settings: Settings, fmt: str
):
    StandInWorker(conn, openai_settings, DONE).start()
    resp = transcribe(
        api, response_format=fmt, language="en", **{"timestamp_granularities[]": "segment"}
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["x-task-id"] == get_lanes(conn, openai_settings)[Priority.HIGH].job_ids[0]
    if fmt == "json":
        assert resp.json() == {"text": DONE["text"], "usage": {"type": "duration", "seconds": 6.6}}
    elif fmt == "verbose_json":
        body = resp.json()
        assert (body["task"], body["language"], body["duration"]) == ("transcribe", "en", 6.6)
        assert body["text"] == DONE["text"]
        assert [(s["id"], s["start"], s["end"], s["text"]) for s in body["segments"]] == [
            (0, 0.38, 3.1, "今天天气很好。"),
            (1, 3.5, 6.02, "明天下雨。"),
        ]
    elif fmt == "text":
        assert resp.headers["content-type"] == "text/plain; charset=utf-8"
        assert resp.text == f"{DONE['text']}\n"
    else:
        parse = parse_srt if fmt == "srt" else parse_vtt
        cues = parse(resp.content.decode("utf-8"))
        assert [c.text for c in cues] == ["今天天气很好。", "明天下雨。"]


def test_a_failed_task_is_a_500_with_its_error_and_no_retry(
    api: TestClient, conn: redis.Redis, openai_settings: Settings
):
    failure = {"status": TaskStatus.FAILED, "error": "Processing timeout (600s exceeded)"}
    StandInWorker(conn, openai_settings, failure).start()
    resp = transcribe(api)
    error = openai_error(resp, 500, None, "transcription_failed")
    assert error["message"] == "Transcription failed: Processing timeout (600s exceeded)"
    assert resp.headers["x-should-retry"] == "false"
    assert error["task_id"] == resp.headers["x-task-id"]


def test_too_many_hotwords_in_the_prompt_is_a_400_that_counts_them(api: TestClient):
    prompt = " ".join(f"word{i}" for i in range(MAX_HOTWORDS + 1))
    error = openai_error(transcribe(api, prompt=prompt), 400, "prompt", None)
    assert error["message"].startswith(f"Too many hotwords: {MAX_HOTWORDS + 1}.")
