"""The completion webhook through a real worker process on the tiny FunASR models: the receiver,
a stdlib HTTP server on a loopback port, gets one signed POST with the transcript; a receiver
that is down leaves the task done at once while the worker's retries, after their back-off, are
recorded on the task and in the worker's log."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from src.api.main import create_app
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Env, result, wait_status
from tests.support.processes import wait_for
from tests.support.receiver import Receiver, closed_port

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stop_workers")]

SECRET = "system-webhook-secret"
HOOK_ENV = {"CALLBACK_SECRET": SECRET, "CALLBACK_RETRY_INTERVALS": "[1,2]"}


def submit_with_callback(client: TestClient, url: str, path: Path = SPEECH_WAV) -> str:
    with open(path, "rb") as fh:
        resp = client.post(
            "/api/v1/asr/submit", files={"audio": (path.name, fh)}, data={"callback_url": url}
        )
    assert resp.status_code == 200, resp.text
    return str(resp.json()["task_id"])


def test_the_receiver_gets_exactly_one_signed_post_with_the_transcript(fenv: Env):
    worker = fenv.worker("hook-1", **HOOK_ENV)
    worker.wait_ready(fenv.conn())
    settings = fenv.settings(callback_secret=SECRET)
    with TestClient(create_app(settings)) as client, Receiver() as receiver:
        task_id = submit_with_callback(client, receiver.url)
        done = wait_status(client, task_id, {"done", "failed"}, 120)
        [got] = receiver.wait(1, 30)
        arrived = time.time()
        time.sleep(2)  # a second POST would have come by now
        assert len(receiver.requests) == 1
        attempts = result(client, task_id)["callback_attempts"]
    assert done["status"] == "done" and done["text"]
    timestamp = got.headers["x-asr-timestamp"]
    mac = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + got.body, hashlib.sha256)
    assert got.headers["x-asr-signature"] == f"sha256={mac.hexdigest()}"
    sent = json.loads(got.body)
    assert sent["task_id"] == task_id and sent["status"] == "done"
    assert sent["text"] == done["text"] and sent["sentences"] == done["sentences"]
    assert len(attempts) == 1 and attempts[0]["delivered"] and attempts[0]["status_code"] == 200
    lag = arrived - datetime.fromisoformat(done["finished_at"]).timestamp()
    print(f"webhook: POST arrived {lag * 1000:.0f} ms after finished_at")  # noqa: T201 - figure
    assert f"task={task_id} callback delivered status=200" in worker.output()


def test_a_receiver_that_is_down_does_not_hold_the_task_and_every_attempt_is_recorded(fenv: Env):
    worker = fenv.worker("hook-2", **HOOK_ENV)
    worker.wait_ready(fenv.conn())
    settings = fenv.settings(callback_secret=SECRET)
    url = f"http://127.0.0.1:{closed_port()}/asr-done"
    with TestClient(create_app(settings)) as client:
        task_id = submit_with_callback(client, url)
        done = wait_status(client, task_id, {"done", "failed"}, 120)
        assert done["status"] == "done" and done["text"]
        # the next transcription is not held up behind the retries
        with open(SPEECH_WAV, "rb") as fh:
            resp = client.post("/api/v1/asr/submit", files={"audio": ("b.wav", fh)})
        other = wait_status(client, resp.json()["task_id"], {"done", "failed"}, 120)
        assert other["status"] == "done"

        # 1 + 2 retries (after 1 s and 2 s, released by the workers' 5 s sweep), then no more
        def all_attempts() -> list[dict] | None:
            attempts = result(client, task_id).get("callback_attempts", [])
            return attempts if len(attempts) == 3 else None

        attempts = wait_for(all_attempts, 60, 0.2, "three delivery attempts")
        time.sleep(6)  # one more sweep: nothing further
        assert len(result(client, task_id)["callback_attempts"]) == 3
        assert result(client, task_id)["status"] == "done"
    assert all(not a["delivered"] and "ConnectError" in a["error"] for a in attempts)
    times = [datetime.fromisoformat(a["at"]).timestamp() for a in attempts]
    gaps = ", ".join(f"{b - a:.1f}" for a, b in itertools.pairwise(times))
    print(f"webhook: retries after {gaps} s (intervals 1, 2; a 5 s sweep)")  # noqa: T201 - figure
    assert worker.output().count(f"task={task_id} callback failed: ConnectError") == 3
    assert "exception raised while executing" not in worker.output()  # no traceback per attempt
