"""Cross-job batching: the same short clips one by one against pooled batches of N jobs.

A worker with ASR_BATCH_JOBS=N takes up to N queued short clips and decodes their VAD segments
in shared ASR batches (SpeechRecognizer.recognize_batch). This figure runs that call directly in
the engine child on Telegram-like clips (5-30 s), for the full-size architecture and the tiny
test model, in alternating rounds, and reports each mode's best wall time, the speed-up against
one by one, and how many transcripts came out identical (text and sentence times). The default
of ASR_BATCH_JOBS per device (src/config.py) follows these figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.bench.common import CpuWatch, log, wait_quiet
from scripts.bench.stack import Child


def run(
    child: Child,
    dirs: dict[str, str],
    *,
    size: str,
    device: str,
    threads: int,
    files: list[Path],
    lengths: list[int],
    sizes: list[int],
    rounds: int,
    own_pids: list[int],
    quiet_s: float,
) -> dict[str, Any]:
    name = f"batch-{size}"
    loaded = child.call(cmd="load", name=name, dirs=dirs, device=device, threads=threads)
    background = wait_quiet(own_pids, quiet_s)
    watch = CpuWatch(own_pids)
    res = child.call(
        cmd="batch", name=name, files=[str(f) for f in files], sizes=sizes, rounds=rounds
    )
    cpu = watch.stop()
    child.call(cmd="unload", name=name)
    for row in res["rows"]:
        log(
            f"batching {size} on {loaded['device_name']}: {row['jobs']} job(s) per pass "
            f"{row['wall_s_best']} s for {res['clips']} clips ({row['speedup']}x, "
            f"{row['identical']}/{res['clips']} identical)"
        )
    return {
        "size": size,
        "device": loaded["device"],
        "device_name": loaded["device_name"],
        "torch_threads": loaded["torch_threads"],
        "asr_params_m": loaded["asr_params_m"],
        "clip_lengths_s": lengths,
        "audio_s": res["audio_s"],
        "rounds": rounds,
        "rows": res["rows"],
        "gpu_peak_allocated_mb": res.get("gpu_peak_allocated_mb"),
        "background_cores_before": background,
        "cpu": cpu,
    }
