"""Figure 5: a burst of voice notes of 5-30 s (seeded random lengths) submitted at once.

Every upload gets its own connection and all are released together, while the workers
transcribe: time until all are done, queue wait per task, submit latency under load, failures.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from scripts.bench.client import Upload, closed_loop, wait_all
from scripts.bench.common import log, phase
from scripts.bench.memory import redis_memory
from scripts.bench.results import BurstFigure, Stats
from scripts.bench.stack import Stack


def run(
    stack: Stack, files: list[Path], lengths: list[int], seed: int, quiet_s: float
) -> BurstFigure:
    assert stack.api is not None
    cache: dict[Path, Upload] = {}
    uploads = [cache.setdefault(f, Upload.of(f)) for f in files]
    with phase(stack.pids(), quiet_s) as measured:
        t0 = time.time()
        submitted, submit_wall = asyncio.run(closed_loop(stack.api.url, uploads, len(uploads), 1))
        ids = [s.task_id for s in submitted if s.task_id]
        done = wait_all(stack.conn(), ids, timeout=3600, interval=0.2)
    ok = [f for f in done.values() if f.status == "done" and f.finished is not None]
    failed = [f for f in done.values() if f.status == "failed"]
    rejected = [s for s in submitted if s.status != 200]
    out = BurstFigure(
        clips=len(files),
        lengths_s={"min": min(lengths), "max": max(lengths), "sum": sum(lengths), "seed": seed},
        workers=len(stack.workers),
        accepted=len(ids),
        rejected=len(rejected),
        rejected_samples=sorted({f"{s.status} {s.error}"[:120] for s in rejected})[:3],
        done=len(ok),
        failed=len(failed),
        failed_samples=sorted({str(f.record.get("error")) for f in failed})[:3],
        all_submitted_s=round(submit_wall, 2),
        all_done_s=round(max(f.finished or 0 for f in ok) - t0, 2) if ok else None,
        queue_wait_s=Stats.of([f.queue_wait for f in ok if f.queue_wait is not None], 1.0, 2),
        submit_latency_ms=Stats.of([s.latency for s in submitted if s.status == 200], 1000),
        engine_s_sum=round(sum(f.processing or 0 for f in ok), 2),
        jobs_per_worker=dict(Counter(f.worker or "?" for f in ok)),
        redis_used_memory_mb_after=redis_memory(stack).used_memory_mb,
        **dict(measured),
    )
    log(
        f"burst: {out.done}/{out.clips} done in {out.all_done_s} s, queue wait max "
        f"{out.queue_wait_s.max} s, p95 {out.queue_wait_s.p95} s"
    )
    return out
