"""The worker supervisor with real workers: how fast a SIGKILLed worker is replaced by a fork.

The measured restart is appended to $RELIABILITY_LOG (JSON lines) when it is set, like
tests/system/test_faults.py; scripts/bench/restart.py compares it with a fresh worker process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from src.api.main import create_app
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Env, history_lines, submit, wait_status
from tests.support.processes import ROOT, parent_of, wait_for
from tests.support.reliability import record
from tests.support.tiny_models import ModelDirs


@pytest.fixture(scope="module")
def senv(tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("supervisor"), model_dirs)
    yield env
    env.close()


def tail(out: Path) -> str:
    """The supervisor's and workers' log, without torch's exit-time binding-leak report."""
    lines = [x for x in out.read_text(errors="replace").splitlines() if "leaked" not in x]
    return "\n".join(lines[-60:])


def beacon(env: Env, name: str) -> dict[str, Any] | None:
    raw = env.conn().get(f"asr:worker:{name}")
    return json.loads(raw) if raw else None


@pytest.mark.slow
def test_a_sigkilled_worker_is_replaced_by_a_fork_and_serves(senv: Env, tmp_path: Path):
    """scripts/start_workers.sh runs the supervisor; its worker-1 is SIGKILLed and the forked
    replacement publishes readiness (a new pid) and then transcribes a job."""
    env = senv.env(RQ_WORKER_COUNT="1", WORKER_PID_DIR=str(tmp_path))
    out = tmp_path / "sup.out"
    with open(out, "wb") as log:
        started = time.monotonic()
        sup = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "start_workers.sh")],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    pids: list[int] = []

    def supervised(pid: int) -> None:
        assert parent_of(pid) == sup.pid
        assert int((tmp_path / "asr-worker-1.pid").read_text()) == pid

    try:
        info = wait_for(lambda: beacon(senv, "worker-1"), 180, 0.05, "worker-1 ready")
        first_ready = time.monotonic() - started
        old = info["pid"]  # type: ignore[index]
        pids.append(old)
        supervised(old)

        killed = time.monotonic()
        os.kill(old, signal.SIGKILL)

        def replaced() -> dict[str, Any] | None:
            assert sup.poll() is None, out.read_text()[-3000:]
            new = beacon(senv, "worker-1")
            return new if new and new["pid"] != old else None

        new = wait_for(replaced, 120, 0.05, "worker-1 replacement")  # a hang guard, not a target
        restart = time.monotonic() - killed
        pid = new["pid"]  # type: ignore[index]
        pids.append(pid)
        supervised(pid)

        settings = senv.settings()
        with TestClient(create_app(settings)) as client:
            task_id = submit(client, SPEECH_WAV)
            body = wait_status(client, task_id, {"done", "failed"}, 120)
        assert body["status"] == "done", body
        assert [x["worker_id"] for x in history_lines(settings, task_id)] == ["worker-1"]

        sup.send_signal(signal.SIGTERM)  # warm shutdown, forwarded
        try:
            assert sup.wait(60) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"no warm shutdown within 60 s:\n{tail(out)}")
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sup.pid, signal.SIGKILL)
        sup.wait(10)
    text = out.read_text()
    assert "killed by SIGKILL" in text and "restarting now" in text
    record(
        "worker SIGKILL under the forking supervisor (scripts/start_workers.sh)",
        recovery_s=round(restart, 2),
        first_start_s=round(first_ready, 2),
        outcome="replacement forked at once, readiness with a new pid, then served a job",
    )
