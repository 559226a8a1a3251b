"""Figure 4: memory. API RSS, worker RSS after the model load and after 200 jobs (a leak check),
Redis used memory.

RSS is read from /proc/<pid>/status (VmRSS, VmHWM for the peak), so nothing needs psutil. The
leak check runs jobs on one worker in waves of `wave` uploads (so the queue stays short and every
job looks the same) and samples the worker's RSS after each wave.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from scripts.bench.client import Upload, bounded, wait_all
from scripts.bench.common import CpuWatch, hwm_mb, log, rss_mb
from scripts.bench.stack import Stack


def redis_memory(stack: Stack) -> dict[str, Any]:
    conn = stack.conn()
    info = conn.info("memory")
    return {
        "used_memory_mb": round(int(info["used_memory"]) / 1024**2, 2),
        "used_memory_peak_mb": round(int(info["used_memory_peak"]) / 1024**2, 2),
        "used_memory_rss_mb": round(int(info["used_memory_rss"]) / 1024**2, 2),
        "keys": conn.dbsize(),
    }


def leak_check(stack: Stack, clip: Path, jobs: int, wave: int = 8) -> dict[str, Any]:
    assert stack.api is not None
    worker = stack.workers[0]
    assert worker.proc is not None
    pid = worker.proc.pid
    upload = Upload.of(clip)
    conn = stack.conn()
    before = rss_mb(pid)
    samples = [{"jobs": 0, "rss_mb": before}]
    watch = CpuWatch(stack.pids())
    done_total = 0
    while done_total < jobs:
        n = min(wave, jobs - done_total)
        submitted, _ = asyncio.run(bounded(stack.api.url, [upload] * n, n))
        ids = [s.task_id for s in submitted if s.task_id]
        finished = wait_all(conn, ids, timeout=600, interval=0.05)
        bad = [f for f in finished.values() if f.status != "done"]
        if len(finished) != n or bad:
            raise RuntimeError(f"leak check: {len(finished)} of {n} finished, {len(bad)} failed")
        done_total += n
        samples.append({"jobs": done_total, "rss_mb": rss_mb(pid)})
    cpu = watch.stop()
    after = rss_mb(pid)
    assert before is not None and after is not None
    # Growth over the second half is the leak's slope once caches have settled.
    mid = min(samples, key=lambda s: abs(s["jobs"] - jobs / 2))
    out = {
        "worker": worker.name,
        "jobs": done_total,
        "clip": {"file": clip.name, "seconds": 6.6},
        "rss_before_mb": before,
        "rss_after_mb": after,
        "growth_mb": round(after - before, 1),
        "growth_pct": round((after - before) / before * 100, 2),
        "second_half_growth_mb": round(after - (mid["rss_mb"] or after), 1),
        "hwm_mb": hwm_mb(pid),
        "samples": samples,
        "cpu": cpu,
    }
    log(
        f"leak check: {worker.name} RSS {before} -> {after} MB over {done_total} jobs "
        f"({out['growth_pct']}%)"
    )
    return out
