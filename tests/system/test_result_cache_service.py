"""The result cache with a real worker process running the real FunASR pipeline on the tiny model
directories: the first voice note is transcribed, the identical second one is done at submit with
the same transcript. The figures (cache-hit submit time against the real transcription's time to
done) go to $RELIABILITY_LOG for the report."""

from __future__ import annotations

import statistics
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from rq.job import Job

from src.api.main import create_app
from tests.support.audio_samples import SPEECH_OGG
from tests.support.fixtures import Env
from tests.support.processes import wait_for
from tests.support.reliability import record

pytestmark = pytest.mark.slow

SUBMIT = "/api/v1/asr/submit"
HITS = 5


def submit(api: TestClient, **form: str) -> tuple[dict[str, Any], float]:
    """The answer and the seconds the submit took, upload included."""
    payload = SPEECH_OGG.read_bytes()
    started = time.perf_counter()
    resp = api.post(SUBMIT, files={"audio": ("voice.ogg", payload)}, data=form)
    took = time.perf_counter() - started
    assert resp.status_code == 200, resp.text
    return resp.json(), took


def test_an_identical_voice_note_is_answered_from_the_real_transcription(
    fenv: Env, stop_workers: None
):
    worker = fenv.worker("cache-worker", RESULT_CACHE_SECONDS="86400")
    worker.wait_ready(fenv.conn())
    settings = fenv.settings(result_cache_seconds=86400)
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        started = time.perf_counter()
        first, first_submit_s = submit(api, hotwords="今天 天气")
        assert first["status"] in ("queued", "processing") and first["cached"] is False

        def finished() -> dict[str, Any] | None:
            body: dict[str, Any] = api.get(first["result_url"]).json()
            return body if body["status"] in ("done", "failed") else None

        source = wait_for(finished, 120, 0.01, "the first transcription")
        to_done_s = time.perf_counter() - started
        assert source["status"] == "done", source
        assert source["cached"] is False and source["rtf"] > 0  # a worker ran the model

        hit_s = []
        for _ in range(HITS):
            hit, took = submit(api, hotwords="天气 今天")
            hit_s.append(took)
            assert hit["status"] == "done" and hit["cached"] is True
            assert not Job.exists(hit["task_id"], connection=fenv.conn())
            result = api.get(hit["result_url"]).json()
            for key in ("text", "sentences", "duration", "hotwords"):
                assert result[key] == source[key], key
        miss, _ = submit(api, hotwords="今天")  # other hotwords: transcribed again
        assert miss["status"] in ("queued", "processing") and miss["cached"] is False

    record(
        "result_cache_hit",
        clip="speech.ogg",
        audio_s=source["duration"],
        first_submit_ms=round(first_submit_s * 1000, 1),
        transcription_to_done_ms=round(to_done_s * 1000, 1),
        worker_rtf=source["rtf"],
        hit_submit_ms_median=round(statistics.median(hit_s) * 1000, 1),
        hit_submit_ms_max=round(max(hit_s) * 1000, 1),
        hits=HITS,
    )
    assert statistics.median(hit_s) < to_done_s  # the point of the cache: a hit skips the model
