"""Cross-job batching: the same short clips one by one against pooled batches of N jobs.

A worker with ASR_BATCH_JOBS=N decodes up to N queued short clips' VAD segments in shared ASR
batches (SpeechRecognizer.recognize_batch). This runs that call in the engine child on
Telegram-like clips (5-30 s), in alternating rounds; the default of ASR_BATCH_JOBS per device
(src/config.py) follows these figures.
"""

from __future__ import annotations

from pathlib import Path

from scripts.bench.common import log, phase
from scripts.bench.results import BatchingFigure
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
) -> BatchingFigure:
    name = f"batch-{size}"
    loaded = child.call(cmd="load", name=name, dirs=dirs, device=device, threads=threads)
    with phase(own_pids, quiet_s) as measured:
        res = child.call(
            cmd="batch", name=name, files=[str(f) for f in files], sizes=sizes, rounds=rounds
        )
    child.call(cmd="unload", name=name)
    fig = BatchingFigure(
        size=size,
        clip_lengths_s=lengths,
        rounds=rounds,
        **{k: loaded[k] for k in ("device", "device_name", "torch_threads", "asr_params_m")},
        **{k: res.get(k) for k in ("audio_s", "rows", "gpu_peak_allocated_mb")},
        **dict(measured),
    )
    for row in fig.rows:
        log(
            f"batching {size} on {fig.device_name}: {row.jobs} job(s) per pass "
            f"{row.wall_s_best} s for {len(files)} clips ({row.speedup}x, "
            f"{row.identical}/{len(files)} identical)"
        )
    return fig
