"""Shared helpers: /proc readers (RSS, CPU time), the background-load watch, machine info.

Nothing here imports torch or FunASR: the driver stays a light process, and only the engine child
(scripts/bench/child.py) and the worker processes load models.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from scripts.bench.results import Cpu, Phase

ROOT = Path(__file__).resolve().parents[2]
HZ = os.sysconf("SC_CLK_TCK")
CHILD_PREFIX = "BENCH-JSON "  # marks the engine child's answers among FunASR's own stdout lines


def log(message: str) -> None:
    """Progress line on stderr, so stdout keeps only the figures."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_ts(value: str | None) -> float | None:
    """An ISO timestamp from a task record -> epoch seconds."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def dist(name: str) -> str | None:
    """An installed distribution's version, None when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# --- /proc ---------------------------------------------------------------------------------------


def _proc_mb(pid: int, key: str) -> float | None:
    """VmRSS or VmHWM (peak RSS) of a process in MB; None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return None


def rss_mb(pid: int) -> float | None:
    return _proc_mb(pid, "VmRSS")


def hwm_mb(pid: int) -> float | None:
    return _proc_mb(pid, "VmHWM")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return (sum(parts[:8]) - parts[3] - (parts[4] if len(parts) > 4 else 0)) / HZ


class CpuWatch:
    """How many cores other people's processes used while a phase ran.

    This machine is shared (other engineers run test suites on it), so every timed phase records
    `foreign_cores`: system-wide busy CPU minus the CPU of this benchmark's own processes.
    """

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = [p for p in pids if p]
        self.t0 = time.monotonic()
        self.busy0 = system_busy_seconds()
        self.own0 = {p: proc_cpu_seconds(p) for p in self.pids}

    def stop(self) -> Cpu:
        wall = max(time.monotonic() - self.t0, 1e-6)
        busy = system_busy_seconds() - self.busy0
        own = sum(max(0.0, proc_cpu_seconds(p) - self.own0[p]) for p in self.pids)
        return Cpu(
            wall_s=round(wall, 2),
            own_cores=round(own / wall, 2),
            foreign_cores=round(max(0.0, busy - own) / wall, 2),
        )


def wait_quiet(own_pids: Iterable[int], max_wait_s: float, threshold: float = 0.3) -> float:
    """Wait (at most max_wait_s) until others use < `threshold` cores for 2 s; return their load."""
    pids = list(own_pids)
    deadline = time.monotonic() + max_wait_s
    quiet_windows = 0
    while True:
        watch = CpuWatch(pids)
        time.sleep(1.0 if max_wait_s > 0 else 0.3)
        load = watch.stop().foreign_cores
        quiet_windows = quiet_windows + 1 if load < threshold else 0
        if quiet_windows >= 2 or time.monotonic() >= deadline:
            return load


@contextmanager
def phase(own_pids: Iterable[int], quiet_s: float) -> Iterator[Phase]:
    """Wait for a quiet machine, then watch the CPU while the body runs: a figure's `Phase`."""
    pids = list(own_pids)
    measured = Phase(background_cores_before=wait_quiet(pids, quiet_s))
    watch = CpuWatch(pids)
    yield measured
    measured.cpu = watch.stop()


# --- machine and versions -------------------------------------------------------------------------


def _first_field(path: str, prefix: str) -> str | None:
    """The value after the first line starting with `prefix` in a /proc text file."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _redis_server_version() -> str | None:
    binary = shutil.which("redis-server")
    if not binary:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    found = [part[2:] for part in out.stdout.split() if part.startswith("v=")]
    return found[0] if found else out.stdout.strip() or None


def _git() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        # rstrip only: porcelain lines start with a space (" M path"), which line[3:] relies on.
        return out.stdout.rstrip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no")
    commit = git("rev-parse", "HEAD")
    if commit is None and os.environ.get("BENCH_GIT_COMMIT"):
        # A copy of the tree without .git (a GPU box): the caller says which commit it is.
        return {
            "commit": os.environ["BENCH_GIT_COMMIT"],
            "branch": os.environ.get("BENCH_GIT_BRANCH"),
            "dirty": os.environ.get("BENCH_GIT_DIRTY") == "1",
        }
    return {
        "commit": commit,
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "modified_files": [line[3:] for line in (status or "").splitlines()],
    }


def machine_info() -> dict[str, Any]:
    """Date, machine, versions and commit: the header of every report."""
    mem_kb = _first_field("/proc/meminfo", "MemTotal:")
    names = (
        "torch",
        "funasr",
        "rq",
        "redis-py",
        "redis-server",
        "fastapi",
        "uvicorn",
        "httpx",
        "av",
    )
    versions = {"python": platform.python_version()} | {
        n: _redis_server_version() if n == "redis-server" else dist(n.removesuffix("-py"))
        for n in names
    }
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _first_field("/proc/cpuinfo", "model name") or "unknown",
            "memory_gb": round(int(mem_kb.split()[0]) / 1024**2, 1) if mem_kb else None,
            "kernel": platform.release(),
            "os": platform.platform(terse=True),
            "loadavg_at_start": os.getloadavg(),
        },
        "versions": versions,
        "git": _git(),
    }


def dump_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
