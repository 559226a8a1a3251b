"""Figure 2b: the service's throughput on N clips against SpeechRecognizer.recognize in a loop.

Same clips, same run, same model, same torch thread count per process (ASR_CPU_THREADS). The
service time runs from the first submit's start (client clock) to the last finished_at; uploads
go in with 10 in flight, so the API's work (storing, probing and fully decoding each upload)
overlaps the workers' and is counted. The direct loop calls `recognize(path)` on each file in
the engine child process, decode included, exactly as the job does.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from scripts.bench.client import Upload, bounded, wait_all
from scripts.bench.common import CpuWatch, log, proc_cpu_seconds, wait_quiet
from scripts.bench.stack import Child, Stack


def service(stack: Stack, files: list[Path], quiet_s: float, label: str) -> dict[str, Any]:
    assert stack.api is not None
    uploads = [Upload.of(f) for f in files]
    background = wait_quiet(stack.pids(), quiet_s)
    watch = CpuWatch(stack.pids())
    assert stack.redis_server is not None and stack.redis_server.proc is not None
    roles = {
        "workers": [w.proc.pid for w in stack.workers if w.proc],
        "api": [stack.api.pid],
        "redis": [stack.redis_server.proc.pid],
    }
    cpu0 = {role: sum(proc_cpu_seconds(p) for p in pids) for role, pids in roles.items()}
    t0 = time.time()
    submitted, _ = asyncio.run(bounded(stack.api.url, uploads, 10))
    ids = [s.task_id for s in submitted if s.task_id]
    done = wait_all(stack.conn(), ids, timeout=1800, interval=0.1)
    cpu = watch.stop()
    cpu_s = {
        role: round(sum(proc_cpu_seconds(p) for p in pids) - cpu0[role], 2)
        for role, pids in roles.items()
    }
    ok = [f for f in done.values() if f.status == "done" and f.finished is not None]
    if len(ok) != len(files):
        raise RuntimeError(f"throughput ({label}): {len(ok)} of {len(files)} jobs finished")
    makespan = max(f.finished for f in ok if f.finished) - t0
    audio = sum(f.duration or 0 for f in ok)
    engine = sum(f.processing or 0 for f in ok)
    out = {
        "workers": len(stack.workers),
        "clips": len(files),
        "audio_s": round(audio, 1),
        "wall_s": round(makespan, 3),
        "clips_per_s": round(len(files) / makespan, 3),
        "audio_s_per_s": round(audio / makespan, 2),
        "engine_s_sum": round(engine, 3),
        "process_cpu_s": cpu_s,  # CPU seconds each role used during the phase
        "background_cores_before": background,
        "cpu": cpu,
    }
    log(f"throughput {label}: {out['clips']} clips in {out['wall_s']} s ({out['clips_per_s']}/s)")
    return out


def direct(child: Child, files: list[Path], own_pids: list[int], quiet_s: float) -> dict[str, Any]:
    background = wait_quiet(own_pids, quiet_s)
    watch = CpuWatch(own_pids)
    res = child.call(
        cmd="loop", name="tiny", files=[str(f) for f in files], batch_size_s=500, warmup=True
    )
    cpu = watch.stop()
    out = {
        "clips": res["n"],
        "audio_s": res["audio_s"],
        "wall_s": res["wall_s"],
        "clips_per_s": round(res["n"] / res["wall_s"], 3),
        "audio_s_per_s": round(res["audio_s"] / res["wall_s"], 2),
        "engine_s_sum": round(sum(res["processing_s"]), 3),
        "process_cpu_s": {"direct": res["cpu_s"]},
        "background_cores_before": background,
        "cpu": cpu,
    }
    log(
        f"throughput direct loop: {out['clips']} clips in {out['wall_s']} s "
        f"({out['clips_per_s']}/s)"
    )
    return out


def compare_one_worker(
    stack: Stack, child: Child, files: list[Path], rounds: int, quiet_s: float
) -> dict[str, Any]:
    """1 worker against the direct loop, alternated `rounds` times (this box is shared, so each
    path's best round is compared, and every round is kept)."""
    pairs = []
    for k in range(rounds):
        svc = service(stack, files, quiet_s, f"1 worker, round {k + 1}")
        dl = direct(child, files, stack.pids(), quiet_s)
        pairs.append({"service": svc, "direct": dl})
    best_svc = min((p["service"] for p in pairs), key=lambda f: f["wall_s"])
    best_dl = min((p["direct"] for p in pairs), key=lambda f: f["wall_s"])
    n = len(files)
    worker_cpu = best_svc["process_cpu_s"]["workers"] / n
    direct_cpu = best_dl["process_cpu_s"]["direct"] / n
    return {
        "rounds": pairs,
        "service_1_worker": best_svc,
        "direct_loop": best_dl,
        "ratio_1_worker": round(best_svc["clips_per_s"] / best_dl["clips_per_s"], 3),
        "ratio_per_round": [
            round(p["service"]["clips_per_s"] / p["direct"]["clips_per_s"], 3) for p in pairs
        ],
        "cpu_s_per_clip": {
            "worker": round(worker_cpu, 3),
            "api": round(best_svc["process_cpu_s"]["api"] / n, 3),
            "redis": round(best_svc["process_cpu_s"]["redis"] / n, 3),
            "direct": round(direct_cpu, 3),
        },
        # Throughput ratio if both were CPU-bound on one core each: immune to other load.
        "cpu_ratio_1_worker": round(direct_cpu / worker_cpu, 3) if worker_cpu else None,
    }
