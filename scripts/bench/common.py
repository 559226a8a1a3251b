"""Shared helpers: /proc readers (RSS, CPU time), the background-load watch, machine info.

Nothing here imports torch or FunASR: the driver stays a light process; only the engine child
(child.py) and the worker processes load models.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from scripts.bench.results import Cpu, Phase

ROOT = Path(__file__).resolve().parents[2]
HZ = os.sysconf("SC_CLK_TCK")
CHILD_PREFIX = "BENCH-JSON "  # marks the engine child's answers among FunASR's stdout lines


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


def _field(path: str, key: str) -> str | None:
    """The value after `key:` on the first line that starts with it in a /proc text file."""
    with suppress(OSError), open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    return None


def rss_mb(pid: int, key: str = "VmRSS") -> float | None:
    """VmRSS (or VmHWM, the peak) of a process in MB; None once it is gone."""
    value = _field(f"/proc/{pid}/status", key + ":")
    return round(int(value.split()[0]) / 1024, 1) if value else None


def hwm_mb(pid: int) -> float | None:
    return rss_mb(pid, "VmHWM")


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / HZ


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def tree_cpu_seconds(pids: Iterable[int]) -> float:
    """CPU seconds of these processes and everything they started, each counted once: their
    own, their reaped children's (cutime/cstime) and their live descendants'. A phase's prep
    processes are the bench's own work, not other people's, even once their pool has ended."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        if (fields := _stat(int(stat.parent.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, seen, todo = 0.0, set(), [p for p in pids if p]
    while todo:
        current = todo.pop()
        if current in seen or (fields := _stat(current)) is None:
            continue
        seen.add(current)
        total += sum(int(x) for x in fields[11:15]) / HZ  # utime stime cutime cstime
        todo += children.get(current, [])
    return total


def system_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (not idle, not iowait)."""
    with open("/proc/stat", encoding="ascii") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    return (sum(parts[:8]) - parts[3] - parts[4]) / HZ


class CpuWatch:
    """How many cores other people's processes used while a phase ran: this machine is shared,
    so every timed phase records system-wide busy CPU minus this benchmark's own processes'."""

    def __init__(self, pids: Iterable[int]) -> None:
        self.pids = [p for p in pids if p]
        self.t0, self.busy0 = time.monotonic(), system_busy_seconds()
        self.own0 = tree_cpu_seconds(self.pids)

    def stop(self) -> Cpu:
        wall = max(time.monotonic() - self.t0, 1e-6)
        own = max(0.0, tree_cpu_seconds(self.pids) - self.own0)
        foreign = max(0.0, system_busy_seconds() - self.busy0 - own) / wall
        return Cpu(
            wall_s=round(wall, 2), own_cores=round(own / wall, 2), foreign_cores=round(foreign, 2)
        )


def wait_quiet(own_pids: Iterable[int], max_wait_s: float, threshold: float = 0.3) -> float:
    """Wait (at most max_wait_s) until others use < `threshold` cores for 2 s; return their load."""
    pids, deadline, quiet = list(own_pids), time.monotonic() + max_wait_s, 0
    while True:
        watch = CpuWatch(pids)
        time.sleep(1.0 if max_wait_s > 0 else 0.3)
        load = watch.stop().foreign_cores
        quiet = quiet + 1 if load < threshold else 0
        if quiet >= 2 or time.monotonic() >= deadline:
            return load


@contextmanager
def phase(own_pids: Iterable[int], quiet_s: float) -> Iterator[Phase]:
    """Wait for a quiet machine, then watch the CPU while the body runs: a figure's `Phase`."""
    pids = list(own_pids)
    measured = Phase(background_cores_before=wait_quiet(pids, quiet_s))
    watch = CpuWatch(pids)
    yield measured
    measured.cpu = watch.stop()


def _run(*cmd: str) -> str | None:
    """A command's stdout (right-stripped: porcelain lines start with a space), None on failure."""
    try:
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.rstrip() if out.returncode == 0 else None


def _git() -> dict[str, Any]:
    status, commit = _run("git", "status", "--porcelain", "-uno"), _run("git", "rev-parse", "HEAD")
    if commit is None and os.environ.get("BENCH_GIT_COMMIT"):
        # A copy of the tree without .git (a GPU box): the caller says which commit it is.
        env = os.environ.get
        return {
            "commit": env("BENCH_GIT_COMMIT"),
            "branch": env("BENCH_GIT_BRANCH"),
            "dirty": env("BENCH_GIT_DIRTY") == "1",
        }
    return {
        "commit": commit,
        "branch": _run("git", "rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "modified_files": [line[3:] for line in (status or "").splitlines()],
    }


def machine_info() -> dict[str, Any]:
    """Date, machine, versions and commit: the header of every report."""
    mem_kb = _field("/proc/meminfo", "MemTotal:")
    redis_server = (_run("redis-server", "--version") or "").split()
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
    versions = {n: dist(n.removesuffix("-py")) for n in names}
    versions["redis-server"] = next((p[2:] for p in redis_server if p.startswith("v=")), None)
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "machine": {
            "cpus": os.cpu_count(),
            "cpu_model": _field("/proc/cpuinfo", "model name") or "unknown",
            "memory_gb": round(int(mem_kb.split()[0]) / 1024**2, 1) if mem_kb else None,
            "kernel": platform.release(),
            "os": platform.platform(terse=True),
            "loadavg_at_start": os.getloadavg(),
        },
        "versions": {"python": platform.python_version(), **versions},
        "git": _git(),
    }


def dump_json(path: Path, data: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
