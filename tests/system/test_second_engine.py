"""A second engine through the whole real service: the job core needs no speech recognition.

uvicorn, two `python -m src.worker` processes and a private redis-server run with
`WORKER_ENGINE=tests.support.loudness_engine:load` (an upload's duration and loudness). The
workers import through tests/support/no_asr/sitecustomize.py, which makes importing src.asr,
FunASR or torch fail, and the ASR model settings point at directories that do not exist: any
ASR code on their path would stop them. Submit, result, history, retry, delete and the recovery
of a SIGKILLed worker's job are checked against figures the test computes on its own.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis

from src.config import Settings
from src.records import task_store
from tests.support.audio_samples import SPEECH_WAV, read_wav, write_wav
from tests.support.fixtures import history_lines, make_settings, submit, wait_status
from tests.support.processes import (
    ROOT,
    ApiProcess,
    RedisServer,
    WorkerProcess,
    service_env,
    wait_for,
)

pytestmark = pytest.mark.slow

NO_ASR = ROOT / "tests" / "support" / "no_asr"
DELAY_S = 0.4  # per second of audio: the 10 s fixture takes ~4 s, long enough to kill mid-job


class Stack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.redis = RedisServer(base / "redis").start()
        self.storage = base / "storage"
        self.storage.mkdir()
        missing = {role: base / "no-such-model" / role for role in ("asr", "vad", "punc")}
        self.env = service_env(
            self.redis.port,
            self.storage,
            missing,
            WORKER_ENGINE="tests.support.loudness_engine:load",
            LOUDNESS_DELAY_PER_AUDIO_S=str(DELAY_S),
            RQ_WORKER_COUNT="2",
        )
        self.api = ApiProcess(self.env, base / "api.log").start()
        self.client = httpx.Client(base_url=self.api.url, timeout=10)
        self.workers: list[WorkerProcess] = []
        self.settings: Settings = make_settings(self.redis.port, self.storage)

    def worker(self, name: str) -> WorkerProcess:
        env = {**self.env, "PYTHONPATH": f"{NO_ASR}:{ROOT}"}
        worker = WorkerProcess(name, env, self.base / "out").start()
        self.workers.append(worker)
        worker.wait_ready(self.redis.client(), timeout=60)
        return worker

    def close(self) -> None:
        self.client.close()
        for worker in self.workers:
            worker.stop(10)
        self.api.stop()
        self.redis.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("second-engine"))
    try:
        stack.worker("loud-1")
        stack.worker("loud-2")
        yield stack
    finally:
        stack.close()


def worker_of(conn: redis.Redis, task_id: str) -> str | None:
    record = task_store.load(conn, task_id)
    return record.worker_id if record else None


def level(samples: np.ndarray) -> float:
    """dBFS of int16 samples, computed here from the stdlib's WAV reader (no PyAV)."""
    rms = math.sqrt(float(np.mean((samples.astype(np.float64) / 32768.0) ** 2)))
    return 20 * math.log10(rms) if rms else -math.inf


def test_workers_run_the_configured_engine_and_no_asr_code(stack: Stack) -> None:
    health = stack.client.get("/api/v1/health").json()
    assert health["status"] == "ready", health
    assert {w["name"] for w in health["workers"]} == {"loud-1", "loud-2"}
    assert all(w["models"] == {"loudness": "rms-dbfs"} for w in health["workers"])
    for worker in stack.workers:
        assert worker.proc is not None
        maps = Path(f"/proc/{worker.proc.pid}/maps").read_text()
        assert "libtorch" not in maps and "funasr" not in maps
        assert "engine loaded on cpu" in worker.output()


def test_submit_and_result_carry_the_engines_figures(stack: Stack) -> None:
    samples, rate = read_wav(SPEECH_WAV)
    duration = len(samples) / rate
    task_id = submit(stack.client, SPEECH_WAV)  # type: ignore[arg-type]

    body = wait_status(stack.client, task_id, {"done", "failed"}, 60)  # type: ignore[arg-type]

    assert body["status"] == "done", body
    assert body["duration"] == pytest.approx(duration, abs=0.01)
    reported = float(body["text"].split(" at ")[1].removesuffix(" dBFS"))
    assert reported == pytest.approx(level(samples), abs=0.2)
    assert len(body["sentences"]) == math.ceil(duration)
    for second, sentence in enumerate(body["sentences"]):
        window = samples[second * rate : (second + 1) * rate]
        measured = float(sentence["text"].removesuffix(" dBFS"))
        expected = level(window)
        assert measured == (expected if math.isinf(expected) else pytest.approx(expected, abs=0.2))
        assert sentence["start"] == second * 1000
    assert body["rtf"] > 0

    page = stack.client.get("/api/v1/asr/history").json()
    assert page["records"][0]["task_id"] == task_id
    assert page["records"][0]["status"] == "success"
    lines = history_lines(stack.settings, task_id)
    assert [line["status"] for line in lines] == ["success"]
    assert lines[0]["text"] == body["text"]


def test_an_engine_error_fails_the_task_and_retry_runs_it_again(
    stack: Stack, tmp_path: Path
) -> None:
    silent = write_wav(np.zeros(2 * 16000, dtype=np.int16), 16000, tmp_path / "silent.wav")
    task_id = submit(stack.client, silent)  # type: ignore[arg-type]

    failed = wait_status(stack.client, task_id, {"done", "failed"}, 30)  # type: ignore[arg-type]
    assert failed["status"] == "failed", failed
    assert failed["error"] == "Recognition failed: no signal: the recording is digital silence"
    assert failed["attempts"] == 1

    retried = stack.client.post(failed["retry_url"])
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] in {"queued", "processing"}
    again = wait_status(stack.client, task_id, {"done", "failed"}, 30)  # type: ignore[arg-type]
    assert again["status"] == "failed" and again["attempts"] == 2
    wait_for(lambda: len(history_lines(stack.settings, task_id)) == 2, 10, 0.05, "2 lines")
    assert [x["status"] for x in history_lines(stack.settings, task_id)] == ["failed", "failed"]


def test_delete_removes_the_task_and_its_recording(stack: Stack) -> None:
    task_id = submit(stack.client, SPEECH_WAV)  # type: ignore[arg-type]
    wait_status(stack.client, task_id, {"done"}, 60)  # type: ignore[arg-type]
    recording = stack.settings.recordings_dir / f"{task_id}.wav"
    assert recording.exists()

    gone = stack.client.delete(f"/api/v1/asr/task/{task_id}")

    assert gone.status_code == 200 and gone.json()["recording_deleted"] is True
    assert not recording.exists()
    assert stack.client.get(f"/api/v1/asr/result/{task_id}").status_code == 404
    page = stack.client.get("/api/v1/asr/history").json()
    assert task_id not in [r["task_id"] for r in page["records"]]


def test_a_sigkilled_workers_job_is_finished_by_the_other(stack: Stack) -> None:
    task_id = submit(stack.client, SPEECH_WAV)  # type: ignore[arg-type]
    running = wait_status(stack.client, task_id, {"processing"}, 30)  # type: ignore[arg-type]
    conn = stack.redis.client()
    name = wait_for(lambda: worker_of(conn, task_id), 10, 0.05, "the job's worker")
    victim = next(w for w in stack.workers if w.name == name)
    assert running["progress"] < 100
    victim.kill_group(signal.SIGKILL)
    killed = time.monotonic()

    done = wait_status(stack.client, task_id, {"done", "failed"}, 60)  # type: ignore[arg-type]

    assert done["status"] == "done", done
    assert done["attempts"] == 2
    assert time.monotonic() - killed < 30
    assert worker_of(conn, task_id) not in (None, name)
    time.sleep(0.5)  # a second history line, were there one, would follow at once
    assert [x["status"] for x in history_lines(stack.settings, task_id)] == ["success"]
