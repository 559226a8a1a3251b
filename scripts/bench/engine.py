"""Figure 3: engine speed (RTF) of the real Paraformer-zh architecture, several batch_size_s.

The published weights are not on these machines, so the ASR model is FunASR's SeacoParaformer
with the published dimensions, randomly initialised (`tests/support/tiny_models.py`, size
"full"); `--asr-model DIR` uses real weights instead. RTF = wall time of
`SpeechRecognizer.recognize(path)` / audio duration, after one warm-up call; best and median.
"""

from __future__ import annotations

from pathlib import Path

from scripts.bench.common import log, phase
from scripts.bench.results import EngineFigure, EngineModel
from scripts.bench.stack import Child


def run(
    child: Child,
    dirs: dict[str, str],
    *,
    device: str,
    threads: int,
    clips: dict[int, Path],
    batch_sizes: list[int],
    reps: int,
    reps_long: int,
    own_pids: list[int],
    quiet_s: float,
    size: str,
) -> EngineFigure:
    loaded = child.call(cmd="load", name="engine", dirs=dirs, device=device, threads=threads)
    log(
        f"engine: {size} model ({loaded['asr_params_m']} M params) loaded on "
        f"{loaded['device_name']} in {loaded['load_s']} s"
    )
    with phase(own_pids, quiet_s) as measured:
        res = child.call(
            cmd="rtf",
            name="engine",
            clips=[[s, str(p)] for s, p in sorted(clips.items())],
            batch_sizes=batch_sizes,
            reps=reps,
            reps_long=reps_long,
            warmup=str(clips[min(clips)]),
        )
    child.call(cmd="unload", name="engine")
    fig = EngineFigure(
        model=EngineModel(
            size=size,
            random_weights=size != "real",
            asr_params_m=loaded["asr_params_m"],
            asr_model_pt_mb=loaded["asr_model_pt_mb"],
            asr_dir=dirs["asr"],
        ),
        process_rss_mb_after_load=loaded["rss_mb"],
        gpu_mb_after_load=loaded.get("gpu_allocated_mb"),
        **{k: loaded[k] for k in ("device", "device_name", "torch_threads", "load_s")},
        **{k: res.get(k) for k in ("warmup_s", "rows", "gpu_peak_allocated_mb", "gpu_reserved_mb")},
        **{k: res.get(k) for k in ("rss_mb_before_trim", "rss_mb_after_trim")},
        **dict(measured),
    )
    for row in fig.rows:
        log(
            f"engine {row.clip_s} s clip, batch_size_s={row.batch_size_s}: RTF best "
            f"{row.rtf_best}, median {row.rtf_median}"
        )
    return fig
