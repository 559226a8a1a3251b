"""Worker supervisor: import the engine once, then fork workers worker-1..N from that image.

A worker started from scratch spends most of its start-up importing the engine's libraries (the
ASR engine's torch and FunASR: about 14 s on a 2-core box) before it even loads a model. Forked
from a parent that has already imported them, a replacement only loads its model, so a killed
worker is back in a couple of seconds.

Fork safety: the parent only imports. It opens no Redis connection, initialises no CUDA and runs
no torch operation (OpenMP and CUDA cannot survive a fork), starts no thread (loguru's
`enqueue=True` sinks start one, so the file sinks are set up by each worker after the fork) and
logs to stderr only. Each child pins itself to one GPU, round-robin over the visible ones, and
then runs `src.worker.process.main` as a fresh `python -m src.worker` would.

The supervisor restarts a dead worker at once, or with a back-off (1 s doubling to 30 s) while it
keeps dying within seconds of its start; SIGINT/SIGTERM are forwarded to the workers (RQ warm
shutdown) and waited for. Killing the supervisor leaves running workers alone: they finish their
job, and a new worker of the same name refuses to start while the old one lives.

Run: `python -m src.worker.supervisor [COUNT]` (or `scripts/start_workers.sh [COUNT]`).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from loguru import logger

QUICK_EXIT_S = 10.0
"""Deaths sooner than this after a start count towards the restart back-off."""
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 30.0
TICK_S = 1.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
LOG_FORMAT = "[{time:YYYY-MM-DD HH:mm:ss}] {level} [supervisor] {message}"

WorkerMain = Callable[[list[str]], int]


@dataclass
class Slot:
    """One worker name and its GPU; `pid` is 0 while no process runs for it."""

    name: str
    gpu: str
    pid: int = 0
    started: float = 0.0
    quick_exits: int = 0
    start_at: float = 0.0


def visible_gpus(environ: Mapping[str, str]) -> list[str]:
    """GPUs to spread workers over, as scripts/start_workers.sh chose them before.

    An existing CUDA_VISIBLE_DEVICES list wins; else the indexes nvidia-smi lists (numbered by
    PCI bus, as CUDA_DEVICE_ORDER=PCI_BUS_ID makes CUDA number them); else none (CPU).
    """
    listed = environ.get("CUDA_VISIBLE_DEVICES", "")
    if listed:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    smi = shutil.which("nvidia-smi", path=environ.get("PATH"))
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.warning(f"nvidia-smi failed ({exc}); workers run on the CPU")
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def make_slots(count: int, gpus: list[str], prefix: str = "") -> list[Slot]:
    """PREFIXworker-1..N, pinned round-robin to `gpus` ("" = CPU). Each host of workers has its
    own WORKER_NAME_PREFIX: names are unique across hosts, as RQ and the recovery need. A pinned
    worker's name ends in its GPU (worker-1-gpu0): `rq info` shows the name and the host, so an
    operator sees which host and which GPU each worker holds."""
    slots = []
    for i in range(1, count + 1):
        gpu = gpus[(i - 1) % len(gpus)] if gpus else ""
        slots.append(Slot(f"{prefix}worker-{i}" + (f"-gpu{gpu}" if gpu else ""), gpu))
    return slots


def restart_delay(quick_exits: int) -> float:
    """Pause before the next start, given how many starts in a row died within QUICK_EXIT_S.

    The first death restarts at once, however early it came (a SIGKILL right after a start);
    a worker that keeps dying right after its start (a bad setting, a twin still running; a
    missing model no longer makes it exit: src/worker/startup.py) is restarted after 1 s, 2 s,
    4 s … up to 30 s instead of in a tight loop, each time spending CPU on a model load.
    """
    if quick_exits <= 1:
        return 0.0
    return min(FIRST_BACKOFF_S * 2.0 ** (quick_exits - 2), MAX_BACKOFF_S)


def next_quick_exits(quick_exits: int, lived: float, status: int) -> int:
    """A worker that gave up soon after its start (an exit status) counts towards the back-off;
    one SIGKILLed from outside (an operator, the OOM killer) does not: it would have served,
    and each second it stays down is a second with one worker fewer."""
    if lived >= QUICK_EXIT_S:
        return 0
    if os.waitstatus_to_exitcode(status) == -signal.SIGKILL:
        return quick_exits
    return quick_exits + 1


def describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exited with status {code}"


def pin_environment(environ: MutableMapping[str, str], slot: Slot, count: int) -> None:
    """The child's view: its GPU only (as cuda:0), CPU when there is none, its name and count."""
    environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    environ["CUDA_VISIBLE_DEVICES"] = slot.gpu
    if not slot.gpu and not environ.get("ASR_DEVICE"):
        environ["ASR_DEVICE"] = "cpu"
    environ["ASR_WORKER_NAME"] = slot.name
    # Settings.cpu_threads shares the cores among RQ_WORKER_COUNT workers: make it this count.
    environ["RQ_WORKER_COUNT"] = str(count)


def check_fork_safe() -> None:
    """Refuse to fork from a parent that has threads or a CUDA context: children would hang."""
    if threading.active_count() > 1:
        names = ", ".join(t.name for t in threading.enumerate())
        raise RuntimeError(f"supervisor has threads before fork: {names}")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError("supervisor initialised CUDA before fork")


def exit_code(exc: SystemExit) -> int:
    """What the interpreter would exit with for this SystemExit (a message means 1)."""
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    sys.stderr.write(f"{exc.code}\n")
    return 1


def run_child(slot: Slot, count: int, worker_main: WorkerMain) -> int:
    """In the forked child: undo the supervisor's signal set-up, pin, run the worker."""
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    pin_environment(os.environ, slot, count)
    from src.config import get_settings

    get_settings.cache_clear()  # the parent's copy predates this child's environment
    return worker_main(["--name", slot.name])


def child_main(slot: Slot, count: int, worker_main: WorkerMain) -> None:
    """Run the worker and leave with os._exit: the child must never return into the parent's
    loop, nor run the parent's atexit handlers."""
    code = 1
    try:
        code = run_child(slot, count, worker_main)
    except SystemExit as exc:
        code = exit_code(exc)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            logger.remove()  # drains the worker's enqueued file sinks before the process ends
        except Exception as exc:  # a full disk must not turn the exit status into a hang
            sys.stderr.write(f"{slot.name}: could not flush logs: {exc}\n")
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


class Supervisor:
    """Keeps one worker process per slot running until SIGINT/SIGTERM."""

    def __init__(
        self, slots: list[Slot], worker_main: WorkerMain, pid_dir: Path, count: int
    ) -> None:
        self.slots = slots
        self.worker_main = worker_main
        self.pid_dir = pid_dir
        self.count = count
        self.stopping = False

    def pid_file(self, slot: Slot) -> Path:
        return self.pid_dir / f"asr-{slot.name}.pid"

    def spawn(self, slot: Slot) -> None:
        check_fork_safe()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child_main(slot, self.count, self.worker_main)
        slot.pid, slot.started = pid, time.monotonic()
        try:
            self.pid_file(slot).write_text(f"{pid}\n")
        except OSError as exc:
            logger.warning(f"{slot.name}: pid file not written: {exc}")
        where = f"GPU {slot.gpu}" if slot.gpu else "CPU"
        logger.info(f"{slot.name} started (pid {pid}) on {where}")

    def start(self, slot: Slot, now: float) -> None:
        """Spawn, or retry later with the back-off when the fork itself fails (no memory,
        process limit): running workers must not lose their supervisor over it."""
        try:
            self.spawn(slot)
        except OSError as exc:
            slot.quick_exits += 1
            delay = max(restart_delay(slot.quick_exits), FIRST_BACKOFF_S)
            slot.start_at = now + delay
            logger.error(f"{slot.name}: fork failed ({exc}); retrying in {delay:.0f}s")

    def reap(self) -> None:
        """Collect every exited child and schedule its restart."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            slot = next((s for s in self.slots if s.pid == pid), None)
            if slot is None:
                continue
            lived = time.monotonic() - slot.started
            slot.pid = 0
            if self.stopping:
                logger.info(f"{slot.name} (pid {pid}) {describe(status)} after {lived:.1f}s")
                with contextlib.suppress(OSError):
                    self.pid_file(slot).unlink()
                continue
            slot.quick_exits = next_quick_exits(slot.quick_exits, lived, status)
            delay = restart_delay(slot.quick_exits)
            slot.start_at = time.monotonic() + delay
            logger.warning(
                f"{slot.name} (pid {pid}) {describe(status)} after {lived:.1f}s; "
                f"restarting {f'in {delay:.0f}s' if delay else 'now'}"
            )

    def stop(self, sig: int) -> None:
        """Forward the signal: the first is RQ's warm shutdown, a later one its cold shutdown."""
        again = " again" if self.stopping else ""
        self.stopping = True
        running = [s for s in self.slots if s.pid]
        logger.info(
            f"{signal.Signals(sig).name}{again}: forwarding to "
            f"{', '.join(s.name for s in running) or 'no worker'}"
        )
        for slot in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, sig)

    def run(self) -> int:
        """The loop: signals are blocked and taken with sigtimedwait, so nothing interrupts a
        fork or a pid-file write, and a dead child wakes the loop at once (SIGCHLD)."""
        watched = {*STOP_SIGNALS, signal.SIGCHLD}
        signal.pthread_sigmask(signal.SIG_BLOCK, watched)
        while True:
            self.reap()
            now = time.monotonic()
            if not self.stopping:
                for slot in self.slots:
                    if not slot.pid and slot.start_at <= now:
                        self.start(slot, now)
            elif not any(s.pid for s in self.slots):
                logger.info("all workers stopped")
                return 0
            waits = [s.start_at - now for s in self.slots if not s.pid and not self.stopping]
            timeout = max(0.01, min([TICK_S, *waits]))
            info = signal.sigtimedwait(watched, timeout)
            if info is not None and info.si_signo in STOP_SIGNALS:
                self.stop(info.si_signo)


def import_engine(engine_spec: str) -> WorkerMain:
    """Import the worker and the engine's module once, here, so that every fork starts with them.

    The engine module may list more modules to import in `PRELOAD` (the ASR engine: torch and
    FunASR, whose own imports are lazy).
    """
    started = time.perf_counter()
    from src.engine.interface import loader_module

    engine = importlib.import_module(loader_module(engine_spec))
    heavy = [*getattr(engine, "PRELOAD", ()), "src.worker.process"]
    for name in heavy:
        importlib.import_module(name)
    loaded = ", ".join([engine.__name__, *heavy])
    logger.info(f"imported {loaded} in {time.perf_counter() - started:.1f}s")
    worker_main: WorkerMain = importlib.import_module("src.worker.process").main
    return worker_main


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError("at least one worker")
    return number


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Start and keep ASR workers worker-1..N running.")
    parser.add_argument("count", nargs="?", type=positive, help="default: RQ_WORKER_COUNT")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, format=LOG_FORMAT, level="INFO", enqueue=False)
    from src.config import get_settings

    settings = get_settings()
    count = args.count or settings.rq_worker_count
    slots = make_slots(count, visible_gpus(os.environ), settings.worker_name_prefix)
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"  # before torch reads it, as the script did
    worker_main = import_engine(settings.worker_engine)
    gc.freeze()  # keep the imported objects out of collections: their pages stay shared
    pid_dir = Path(os.environ.get("WORKER_PID_DIR") or "/tmp")
    return Supervisor(slots, worker_main, pid_dir, count).run()


if __name__ == "__main__":
    raise SystemExit(main())
