"""Cross-job batching: the same short clips one by one against pooled batches of N jobs.

A worker with ASR_BATCH_JOBS=N decodes up to N queued clips' VAD segments in shared ASR batches
(SpeechRecognizer.recognize_batch); the default per device (src/config.py) follows these figures.
"""

from __future__ import annotations

from pathlib import Path

from scripts.bench.common import log
from scripts.bench.engine import EngineRun
from scripts.bench.results import BatchingFigure, Config
from src.asr.engine import PIPELINE_WAVES


def run(
    engine: EngineRun,
    dirs: dict[str, str],
    size: str,
    files: list[Path],
    lengths: list[int],
    cfg: Config,
) -> BatchingFigure:
    """Telegram-like clips (5-30 s), one by one and in groups of each size, alternating rounds."""
    sizes, rounds = cfg.batching_sizes, cfg.batching_rounds
    paths = [str(f) for f in files]
    pipeline = {
        "waves": cfg.batching_waves,
        "processes": cfg.batching_prep_processes,
        "passes_of": PIPELINE_WAVES,
    }
    loaded, res, measured = engine.measure(
        f"batch-{size}",
        dirs,
        cmd="batch",
        files=paths,
        sizes=sizes,
        rounds=rounds,
        pipeline=pipeline,
    )
    fig = BatchingFigure(
        size=size,
        clip_lengths_s=lengths,
        rounds=rounds,
        **{k: loaded[k] for k in ("device", "device_name", "torch_threads", "asr_params_m")},
        **{k: res.get(k) for k in ("audio_s", "rows", "gpu_peak_allocated_mb", "prep_rss_mb")},
        **dict(measured),
    )
    for r in fig.rows:
        how = f", waves of {r.wave}, {r.prep_processes} prep process(es)" if r.wave else ""
        log(f"batching {size}: {r.jobs} job(s) per pass{how} {r.wall_s_best} s ({r.speedup}x)")
    return fig
