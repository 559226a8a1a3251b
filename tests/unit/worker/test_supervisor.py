"""The worker supervisor (src/worker/supervisor.py): GPU pinning, restart back-off, signals,
and, with real processes, how fast a SIGKILLed worker is replaced by a fork.

The measured restart is appended to $RELIABILITY_LOG (JSON lines) when it is set, like
tests/test_faults.py; scripts/bench/restart.py compares it with a fresh worker process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from src.api.main import create_app
from src.worker import supervisor
from src.worker.supervisor import Slot
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Env, history_lines, submit, wait_status
from tests.support.processes import ROOT, wait_for
from tests.support.reliability import record
from tests.support.tiny_models import ModelDirs


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().split()[3])


# --- pure helpers ---------------------------------------------------------------------------------


def test_workers_are_pinned_round_robin_to_the_listed_gpus():
    gpus = supervisor.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5", "PATH": "/nonexistent"})
    assert gpus == ["2", "5"]
    slots = supervisor.make_slots(3, gpus)
    assert [(s.name, s.gpu) for s in slots] == [
        ("worker-1", "2"),
        ("worker-2", "5"),
        ("worker-3", "2"),
    ]


def test_gpus_come_from_nvidia_smi_else_none(tmp_path: Path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n'\n")
    smi.chmod(0o755)
    assert supervisor.visible_gpus({"PATH": str(tmp_path)}) == ["0", "1"]
    assert supervisor.visible_gpus({"CUDA_VISIBLE_DEVICES": "", "PATH": str(tmp_path)}) == [
        "0",
        "1",
    ]
    assert supervisor.visible_gpus({"PATH": str(tmp_path / "none")}) == []


def test_a_cpu_worker_defaults_to_the_cpu_and_a_gpu_worker_sees_only_its_gpu():
    env: dict[str, str] = {"CUDA_VISIBLE_DEVICES": "0,1"}
    supervisor.pin_environment(env, Slot("worker-2", "1"), 2)
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and "ASR_DEVICE" not in env
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["ASR_WORKER_NAME"] == "worker-2"
    assert env["RQ_WORKER_COUNT"] == "2"
    cpu: dict[str, str] = {"ASR_DEVICE": ""}
    supervisor.pin_environment(cpu, Slot("worker-1", ""), 1)
    assert cpu["CUDA_VISIBLE_DEVICES"] == "" and cpu["ASR_DEVICE"] == "cpu"
    explicit = {"ASR_DEVICE": "cuda"}
    supervisor.pin_environment(explicit, Slot("worker-1", ""), 1)
    assert explicit["ASR_DEVICE"] == "cuda"


def test_restart_is_immediate_once_then_backs_off_to_30s():
    delays = [supervisor.restart_delay(n) for n in range(9)]
    assert delays == [0, 0, 1, 2, 4, 8, 16, 30, 30]


def test_only_workers_that_give_up_early_back_off():
    killed, failed = signal.SIGKILL, 1 << 8  # wait statuses: SIGKILLed, exited with status 1
    assert supervisor.next_quick_exits(3, 2.0, failed) == 4
    assert supervisor.next_quick_exits(3, 2.0, killed) == 3  # killed from outside: no penalty
    assert supervisor.next_quick_exits(3, 60.0, failed) == 0  # it ran a while: start afresh
    for _ in range(5):  # the soak's injector killing worker-1 right after each restart
        assert supervisor.restart_delay(supervisor.next_quick_exits(0, 1.0, killed)) == 0


def test_no_fork_while_a_thread_runs():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, name="busy")
    thread.start()
    try:
        with pytest.raises(RuntimeError, match="busy"):
            supervisor.check_fork_safe()
    finally:
        stop.set()
        thread.join()


def test_a_failed_fork_is_retried_later(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    def no_fork() -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(supervisor, "check_fork_safe", lambda: None)
    monkeypatch.setattr(supervisor.os, "fork", no_fork)
    slot = Slot("worker-1", "")
    supervisor.Supervisor([slot], lambda argv: 0, tmp_path, 1).start(slot, 100.0)
    assert slot.pid == 0 and slot.start_at == 101.0 and slot.quick_exits == 1


def test_exit_statuses_are_described_and_exit_codes_kept():
    assert supervisor.describe(9) == "killed by SIGKILL"
    assert supervisor.describe(3 << 8) == "exited with status 3"
    assert supervisor.exit_code(SystemExit()) == 0
    assert supervisor.exit_code(SystemExit(4)) == 4
    assert supervisor.exit_code(SystemExit("a worker named worker-1 is already running")) == 1


# --- the loop, with stand-in workers (no torch) ---------------------------------------------------

LOOP = """
import signal, sys, time
from pathlib import Path
from src.worker import supervisor

def crash(argv):
    return 3

def serve(argv):
    stopped = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    Path(sys.argv[2], "ready-" + argv[1]).touch()
    while not stopped:
        time.sleep(0.05)
    return 0

worker = crash if sys.argv[1] == "crash" else serve
slots = supervisor.make_slots(2, [])
raise SystemExit(supervisor.Supervisor(slots, worker, Path(sys.argv[2]), 2).run())
"""


@contextlib.contextmanager
def loop(mode: str, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    log = tmp_path / "loop.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", LOOP, mode, str(tmp_path)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc, log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_a_worker_that_keeps_dying_is_restarted_with_a_back_off(tmp_path: Path):
    with loop("crash", tmp_path) as (proc, log):
        wait_for(lambda: "restarting in 2s" in log.read_text(), 30, 0.1, "third quick death")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    text = log.read_text()
    assert "worker-1 (pid" in text and "exited with status 3" in text
    assert "restarting now" in text and "restarting in 1s" in text
    # 0 + 1 + 2 s of pauses: three or four starts per worker, not a tight loop
    assert 3 <= text.count("worker-1 started") <= 4


def test_sigterm_is_forwarded_and_waited_for(tmp_path: Path):
    with loop("serve", tmp_path) as (proc, log):
        files = [tmp_path / "asr-worker-1.pid", tmp_path / "asr-worker-2.pid"]
        ready = [tmp_path / "ready-worker-1", tmp_path / "ready-worker-2"]
        wait_for(lambda: all(f.exists() for f in files + ready), 30, 0.1, "workers up")
        pids = [int(f.read_text()) for f in files]
        for pid in pids:
            assert parent_of(pid) == proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    text = log.read_text()
    assert "SIGTERM: forwarding to worker-1, worker-2" in text
    assert text.count("exited with status 0") == 2 and "restarting" not in text
    assert not any(f.exists() for f in files)  # a stopped worker leaves no stale pid file
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


# --- real workers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def senv(tmp_path_factory: pytest.TempPathFactory, model_dirs: ModelDirs) -> Iterator[Env]:
    env = Env(tmp_path_factory.mktemp("supervisor"), model_dirs)
    yield env
    env.close()


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
        assert sup.wait(60) == 0
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
