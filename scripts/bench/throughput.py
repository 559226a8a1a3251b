"""Figure 2b: the service's throughput on N clips against SpeechRecognizer.recognize in a loop.

Same clips, same run, same model, same torch threads per process. The service's time runs from
the first submit (client clock) to the last finished_at, uploads 10 in flight, so the API's work
on each upload overlaps the workers' and is counted; the direct loop runs in the engine child.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from scripts.bench.client import Upload, bounded, wait_all
from scripts.bench.common import log, phase, proc_cpu_seconds
from scripts.bench.results import PathRun, Phase, Round, ThroughputFigure
from scripts.bench.stack import Child, Stack


def _path_run(
    clips: int,
    audio: float,
    wall: float,
    engine: float,
    cpu_s: dict[str, float],
    measured: Phase,
    workers: int | None = None,
) -> PathRun:
    return PathRun(
        workers=workers,
        clips=clips,
        audio_s=round(audio, 3),
        wall_s=round(wall, 3),
        clips_per_s=round(clips / wall, 3),
        audio_s_per_s=round(audio / wall, 2),
        engine_s_sum=round(engine, 3),
        process_cpu_s=cpu_s,  # CPU seconds each role (workers, api, redis; direct) used
        **dict(measured),
    )


def service(stack: Stack, files: list[Path], quiet_s: float, label: str) -> PathRun:
    assert stack.api is not None and stack.redis_server and stack.redis_server.proc
    uploads = [Upload.of(f) for f in files]
    roles = {
        "workers": [w.proc.pid for w in stack.workers if w.proc],
        "api": [stack.api.pid],
        "redis": [stack.redis_server.proc.pid],
    }

    def cpu_now() -> dict[str, float]:
        return {role: sum(proc_cpu_seconds(p) for p in pids) for role, pids in roles.items()}

    with phase(stack.pids(), quiet_s) as measured:
        cpu0, t0 = cpu_now(), time.time()
        submitted, _ = asyncio.run(bounded(stack.api.url, uploads, 10))
        ids = [s.task_id for s in submitted if s.task_id]
        done = wait_all(stack.conn(), ids, timeout=1800, interval=0.1)
        cpu1 = cpu_now()
    ok = [f for f in done.values() if f.status == "done" and f.finished is not None]
    if len(ok) != len(files):
        raise RuntimeError(f"throughput ({label}): {len(ok)} of {len(files)} jobs finished")
    out = _path_run(
        len(files),
        sum(f.duration or 0 for f in ok),
        max(f.finished or 0 for f in ok) - t0,
        sum(f.processing or 0 for f in ok),
        {role: round(cpu1[role] - cpu0[role], 2) for role in roles},
        measured,
        workers=len(stack.workers),
    )
    log(f"throughput {label}: {out.clips} clips in {out.wall_s} s ({out.clips_per_s}/s)")
    return out


def direct(child: Child, files: list[Path], own_pids: list[int], quiet_s: float) -> PathRun:
    with phase(own_pids, quiet_s) as measured:
        res = child.call(
            cmd="loop", name="tiny", files=[str(f) for f in files], batch_size_s=500, warmup=True
        )
    out = _path_run(
        res["n"],
        res["audio_s"],
        res["wall_s"],
        sum(res["processing_s"]),
        {"direct": res["cpu_s"]},
        measured,
    )
    log(f"throughput direct loop: {out.clips} clips in {out.wall_s} s ({out.clips_per_s}/s)")
    return out


def compare(
    stack: Stack,
    child: Child,
    files: list[Path],
    lengths: list[int],
    *,
    rounds: int,
    quiet_s: float,
    threads: int,
    all_workers: PathRun | None,
) -> ThroughputFigure:
    """1 worker against the direct loop, alternated `rounds` times (this box is shared, so each
    path's best round is compared, and every round is kept)."""
    pairs = [
        Round(
            service=service(stack, files, quiet_s, f"1 worker, round {k + 1}"),
            direct=direct(child, files, stack.pids(), quiet_s),
        )
        for k in range(rounds)
    ]
    svc = min((p.service for p in pairs), key=lambda f: f.wall_s)
    dl = min((p.direct for p in pairs), key=lambda f: f.wall_s)
    cpu = svc.process_cpu_s | dl.process_cpu_s
    roles = {"worker": "workers", "api": "api", "redis": "redis", "direct": "direct"}
    per_clip = {name: round(cpu[role] / len(files), 3) for name, role in roles.items()}
    return ThroughputFigure(
        rounds=pairs,
        service_1_worker=svc,
        direct_loop=dl,
        ratio_1_worker=round(svc.clips_per_s / dl.clips_per_s, 3),
        ratio_per_round=[round(p.service.clips_per_s / p.direct.clips_per_s, 3) for p in pairs],
        cpu_s_per_clip=per_clip,
        # Throughput ratio if both were CPU-bound on one core each: immune to other load.
        cpu_ratio_1_worker=round(cpu["direct"] / cpu["workers"], 3) if cpu["workers"] else None,
        clip_lengths_s=lengths,
        threads_per_process=threads,
        service_n_workers=all_workers,
        ratio_n_workers=round(all_workers.clips_per_s / dl.clips_per_s, 3) if all_workers else None,
    )
