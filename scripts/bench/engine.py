"""Figure 3: engine speed (RTF) of the real Paraformer-zh architecture, several batch_size_s.

The published weights are not on these machines, so the ASR model is FunASR's SeacoParaformer
with the published dimensions, randomly initialised (tests/support/tiny_models.py, "full");
`--asr-model DIR` uses real weights instead. RTF = wall time of `recognize(path)` / audio length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.bench.common import log, phase
from scripts.bench.results import Config, EngineFigure, EngineModel, Phase
from scripts.bench.stack import Child


@dataclass
class EngineRun:
    """The engine child, and the device, threads and machine the engine figures run on."""

    child: Child
    device: str
    threads: int
    own_pids: list[int]
    quiet_s: float

    def measure(
        self, name: str, dirs: dict[str, str], **cmd: Any
    ) -> tuple[dict[str, Any], dict[str, Any], Phase]:
        """Load a model in the child, run one command on a quiet machine, unload the model."""
        loaded = self.child.call(
            cmd="load", name=name, dirs=dirs, device=self.device, threads=self.threads
        )
        with phase(self.own_pids, self.quiet_s) as measured:
            res = self.child.call(name=name, **cmd)
        self.child.call(cmd="unload", name=name)
        return loaded, res, measured


def rtf(
    run: EngineRun, dirs: dict[str, str], size: str, clips: dict[int, Path], cfg: Config
) -> EngineFigure:
    """The RTF grid: every clip at every batch_size_s, after one warm-up call."""
    clip_list, warmup = [[s, str(p)] for s, p in sorted(clips.items())], str(clips[min(clips)])
    grid = {
        "batch_sizes": cfg.engine_batches,
        "reps": cfg.engine_reps,
        "reps_long": cfg.engine_reps_long,
    }
    loaded, res, measured = run.measure(
        "engine", dirs, cmd="rtf", clips=clip_list, warmup=warmup, **grid
    )
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
        **{k: res.get(k) for k in EngineFigure.model_fields if k in res},
        **dict(measured),
    )
    for r in fig.rows:
        log(f"engine {r.clip_s} s, batch_size_s={r.batch_size_s}: RTF {r.rtf_best}, {r.rtf_median}")
    return fig
