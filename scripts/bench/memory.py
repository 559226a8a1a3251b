"""Figure 4: memory. API RSS, worker RSS after the model load and over many jobs (a leak
check), Redis used memory. RSS comes from /proc/<pid>/status, so nothing needs psutil.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from scripts.bench.client import Upload, bounded, wait_all
from scripts.bench.common import CpuWatch, hwm_mb, log, rss_mb
from scripts.bench.results import Clip, LeakCheck, RedisMemory, RssSample
from scripts.bench.stack import Stack


def redis_memory(stack: Stack) -> RedisMemory:
    conn = stack.conn()
    info = conn.info("memory")
    keys = ("used_memory", "used_memory_peak", "used_memory_rss")
    return RedisMemory(
        **{f"{k}_mb": round(int(info[k]) / 1024**2, 2) for k in keys}, keys=conn.dbsize()
    )


def leak_check(stack: Stack, clip: Path, jobs: int, wave: int = 8) -> LeakCheck:
    """Jobs on one worker in waves of `wave` uploads (the queue stays short, every job looks the
    same), sampling the worker's RSS after each wave."""
    assert stack.api is not None
    worker = stack.workers[0]
    assert worker.proc is not None
    pid = worker.proc.pid
    upload = Upload.of(clip)
    before = rss_mb(pid) or 0.0
    samples = [RssSample(jobs=0, rss_mb=before)]
    watch = CpuWatch(stack.pids())
    while samples[-1].jobs < jobs:
        n = min(wave, jobs - samples[-1].jobs)
        submitted, _ = asyncio.run(bounded(stack.api.url, [upload] * n, n))
        ids = [s.task_id for s in submitted if s.task_id]
        finished = wait_all(stack.conn(), ids, timeout=600, interval=0.05)
        bad = [f for f in finished.values() if f.status != "done"]
        if len(finished) != n or bad:
            raise RuntimeError(f"leak check: {len(finished)} of {n} finished, {len(bad)} failed")
        samples.append(RssSample(jobs=samples[-1].jobs + n, rss_mb=rss_mb(pid)))
    after = rss_mb(pid) or 0.0
    # Growth over the second half is the leak's slope once caches have settled.
    mid = min(samples, key=lambda s: abs(s.jobs - jobs / 2))
    out = LeakCheck(
        worker=worker.name,
        jobs=samples[-1].jobs,
        clip=Clip(file=clip.name, seconds=6.6),
        rss_before_mb=before,
        rss_after_mb=after,
        growth_mb=round(after - before, 1),
        growth_pct=round((after - before) / before * 100, 2),
        second_half_growth_mb=round(after - (mid.rss_mb or after), 1),
        hwm_mb=hwm_mb(pid),
        samples=samples,
        cpu=watch.stop(),
    )
    log(f"leak check: {worker.name} RSS {before} -> {after} MB over {out.jobs} jobs")
    return out
