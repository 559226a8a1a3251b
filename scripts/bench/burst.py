"""Figure 5: a burst of voice notes of 5-30 s (seeded random lengths) submitted at once.

Every upload gets its own connection and all are released together. Reported: time until all are
done (first submit start -> last finished_at), queue wait per task (started_at - created_at: max,
p95, median), submit latency under load (the workers transcribe while uploads arrive), failures,
jobs per worker and Redis memory afterwards.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

from scripts.bench.client import Upload, all_at_once, wait_all
from scripts.bench.common import CpuWatch, log, summary, wait_quiet
from scripts.bench.stack import Stack


def run(
    stack: Stack, files: list[Path], lengths: list[int], seed: int, quiet_s: float
) -> dict[str, Any]:
    assert stack.api is not None
    cache: dict[Path, Upload] = {}
    uploads = [cache.setdefault(f, Upload.of(f)) for f in files]
    background = wait_quiet(stack.pids(), quiet_s)
    watch = CpuWatch(stack.pids())
    t0 = time.time()
    submitted, submit_wall = asyncio.run(all_at_once(stack.api.url, uploads))
    ids = [s.task_id for s in submitted if s.task_id]
    done = wait_all(stack.conn(), ids, timeout=3600, interval=0.2)
    cpu = watch.stop()
    ok = [f for f in done.values() if f.status == "done" and f.finished is not None]
    failed = [f for f in done.values() if f.status == "failed"]
    waits = [f.queue_wait for f in ok if f.queue_wait is not None]
    total = (max(f.finished for f in ok if f.finished) - t0) if ok else None
    rejected = [s for s in submitted if s.status != 200]
    out = {
        "clips": len(files),
        "lengths_s": {"min": min(lengths), "max": max(lengths), "sum": sum(lengths), "seed": seed},
        "workers": len(stack.workers),
        "accepted": len(ids),
        "rejected": len(rejected),
        "rejected_samples": sorted({f"{s.status} {s.error}"[:120] for s in rejected})[:3],
        "done": len(ok),
        "failed": len(failed),
        "failed_samples": sorted({str(f.record.get("error")) for f in failed})[:3],
        "all_submitted_s": round(submit_wall, 2),
        "all_done_s": round(total, 2) if total is not None else None,
        "queue_wait_s": summary(waits, 1.0, 2),
        "submit_latency_ms": summary([s.latency for s in submitted if s.status == 200], 1000),
        "engine_s_sum": round(sum(f.processing or 0 for f in ok), 2),
        "jobs_per_worker": dict(Counter(f.worker for f in ok)),
        "redis_used_memory_mb_after": round(
            int(stack.conn().info("memory")["used_memory"]) / 1024**2, 2
        ),
        "background_cores_before": background,
        "cpu": cpu,
    }
    log(
        f"burst: {out['done']}/{out['clips']} done in {out['all_done_s']} s, queue wait max "
        f"{out['queue_wait_s']['max']} s, p95 {out['queue_wait_s']['p95']} s"
    )
    return out
