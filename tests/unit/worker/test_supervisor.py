"""The worker supervisor (src/worker/supervisor.py): GPU pinning, restart back-off, signals,
and its loop with stand-in workers (no torch).

How fast a SIGKILLed real worker is replaced by a fork: tests/system/test_supervisor.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.worker import supervisor
from src.worker.supervisor import Slot
from tests.support.processes import ROOT, parent_of, wait_for

# --- pure helpers ---------------------------------------------------------------------------------


def test_workers_are_pinned_round_robin_to_the_listed_gpus():
    gpus = supervisor.visible_gpus({"CUDA_VISIBLE_DEVICES": "2, 5", "PATH": "/nonexistent"})
    assert gpus == ["2", "5"]
    slots = supervisor.make_slots(3, gpus)
    assert [(s.name, s.gpu) for s in slots] == [
        ("worker-1-gpu2", "2"),
        ("worker-2-gpu5", "5"),
        ("worker-3-gpu2", "2"),
    ]
    assert [s.name for s in supervisor.make_slots(2, [], "box2-")] == [
        "box2-worker-1",
        "box2-worker-2",
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
