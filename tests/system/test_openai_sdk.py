"""The official `openai` SDK against the live service: a real uvicorn, the session's two real
worker processes on the tiny FunASR models, and their Redis. Every response format is compared
with the native result of the same task (named by the `x-task-id` header), the SRT and VTT are
parsed back, and the native export of that task must be the same file.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Service
from tests.support.processes import ApiProcess, service_env, wait_for
from tests.support.subtitles import ParsedCue, assert_in_time_order, parse_srt, parse_vtt
from tests.support.tiny_models import ModelDirs

pytestmark = pytest.mark.slow

KEY = "sdk-test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SPEECH = ("voice.wav", SPEECH_WAV.read_bytes(), "audio/wav")


def start_api(service: Service, model_dirs: ModelDirs, log: str, **settings: str) -> ApiProcess:
    models = {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc}
    env = service_env(
        service.redis_server.port,
        service.storage,
        models,
        LOG_LEVEL="INFO",
        API_KEY=KEY,
        **settings,
    )
    return ApiProcess(env, service.storage / log).start("/api/v1/health")


@pytest.fixture(scope="module")
def live(service: Service, model_dirs: ModelDirs) -> Iterator[str]:
    api = start_api(service, model_dirs, "uvicorn-openai.out")
    try:
        yield api.url
    finally:
        api.stop()


@pytest.fixture(scope="module")
def sdk(live: str) -> Iterator[OpenAI]:
    with OpenAI(base_url=f"{live}/v1", api_key=KEY, timeout=120) as client:
        yield client


def native(live: str, task_id: str, fmt: str = "json") -> httpx.Response:
    url = f"{live}/api/v1/asr/result/{task_id}"
    return httpx.get(url, params={"format": fmt}, headers=AUTH, timeout=10)


def as_sentences(cues: list[ParsedCue]) -> list[dict[str, Any]]:
    return [{"text": c.text, "start": c.start_ms, "end": c.end_ms} for c in cues]


def test_the_sdk_lists_the_model_and_its_alias(sdk: OpenAI, model_dirs: ModelDirs):
    ids = [m.id for m in sdk.models.list()]
    assert ids == [model_dirs.asr.name, "whisper-1"]  # a directory: its name, not its path
    assert sdk.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.models.retrieve("gpt-9")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_response_format_matches_the_tasks_native_result(
    sdk: OpenAI, live: str, model_dirs: ModelDirs, fmt: str
):
    raw = sdk.audio.transcriptions.with_raw_response.create(
        file=SPEECH,
        model=model_dirs.asr.name if fmt == "json" else "whisper-1",
        response_format=fmt,  # type: ignore[arg-type]
        timestamp_granularities=["segment"] if fmt == "verbose_json" else openai.omit,
    )
    answer = raw.parse()
    task = native(live, raw.headers["x-task-id"]).json()
    assert task["status"] == "done", task
    sentences = task["sentences"]
    assert len(sentences) >= 2  # the tiny models split this clip into several sentences

    if fmt == "json":
        assert isinstance(answer, openai.types.audio.Transcription)
        assert answer.text == task["text"]
        assert answer.usage is not None and answer.usage.seconds == task["duration"]
    elif fmt == "verbose_json":
        assert isinstance(answer, openai.types.audio.TranscriptionVerbose)
        assert (answer.text, answer.language) == (task["text"], "zh")
        assert answer.duration == task["duration"]
        assert answer.segments is not None
        assert [(s.id, s.start, s.end, s.text) for s in answer.segments] == [
            (i, s["start"] / 1000, s["end"] / 1000, s["text"]) for i, s in enumerate(sentences)
        ]
    elif fmt == "text":
        assert raw.headers["content-type"] == "text/plain; charset=utf-8"
        assert answer == f"{task['text']}\n"
        assert native(live, task["task_id"], "txt").text == answer
    else:
        assert isinstance(answer, str)
        cues = parse_srt(answer) if fmt == "srt" else parse_vtt(answer)
        assert_in_time_order(cues)
        assert as_sentences(cues) == sentences
        exported = native(live, task["task_id"], fmt)
        media = "application/x-subrip" if fmt == "srt" else "text/vtt"
        assert exported.headers["content-type"] == f"{media}; charset=utf-8"
        assert raw.headers["content-type"] == exported.headers["content-type"]
        assert exported.content.decode("utf-8") == answer  # one formatter for both faces


def test_the_prompt_is_applied_as_hotwords(sdk: OpenAI, live: str):
    raw = sdk.audio.transcriptions.with_raw_response.create(
        file=SPEECH, model="whisper-1", prompt="今天, 天气"
    )
    task = native(live, raw.headers["x-task-id"]).json()
    assert {"今天", "天气"} <= set(task["hotwords"])


def test_refusals_arrive_as_the_sdks_own_errors(sdk: OpenAI, live: str):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.transcriptions.create(file=SPEECH, model="gpt-9")
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")

    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.transcriptions.create(file=("a.wav", b"RIFF....not audio"), model="whisper-1")
    assert (caught.value.code, caught.value.param) == ("invalid_audio", "file")
    assert "Invalid file format" in caught.value.message

    with (
        OpenAI(base_url=f"{live}/v1", api_key="wrong", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError) as denied,
    ):
        stranger.audio.transcriptions.create(file=SPEECH, model="whisper-1")
    assert denied.value.code == "invalid_api_key"


def test_a_transcription_past_the_wait_names_its_task_and_is_not_resubmitted(
    service: Service, model_dirs: ModelDirs, long_clip: Path
):
    """The SDK retries a 5xx twice by default; `x-should-retry: false` keeps the 504 from
    queueing the same upload three times. The task goes on and finishes."""
    conn = service.redis_server.client()
    day_key = f"asr:seq:{datetime.now(UTC):%Y-%m-%d}"
    before = int(conn.get(day_key) or 0)
    api = start_api(service, model_dirs, "uvicorn-openai-wait.out", OPENAI_WAIT_SECONDS="1")
    try:
        with OpenAI(base_url=f"{api.url}/v1", api_key=KEY) as client:  # default retries
            audio = (long_clip.name, long_clip.read_bytes(), "audio/flac")
            with pytest.raises(openai.APIStatusError) as caught:
                client.audio.transcriptions.create(file=audio, model="whisper-1")
        error = caught.value
        assert error.status_code == 504 and error.code == "transcription_timeout"
        assert isinstance(error.body, dict)
        task_id = error.body["task_id"]
        assert error.response.headers["x-task-id"] == task_id and task_id in error.message
        assert int(conn.get(day_key) or 0) == before + 1  # one task: no retry

        def finished() -> dict[str, Any] | None:
            body = native(api.url, task_id).json()
            return body if body["status"] in ("done", "failed") else None

        assert wait_for(finished, 120, 0.2, task_id)["status"] == "done"  # type: ignore[index]
    finally:
        api.stop()
