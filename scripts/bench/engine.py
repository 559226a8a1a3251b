"""Figure 3: engine speed (RTF) of the real Paraformer-zh architecture, several batch_size_s.

The published SeACo-Paraformer weights are not on these machines (no model hub), so the ASR
model is `tests/support/tiny_models.build_seaco_paraformer(size="full")`: FunASR's own
SeacoParaformer with the published dimensions (50-block SANM encoder, 16-block decoder, d=512,
vocab 8404; ~1 GB model.pt), randomly initialised. With real weights, `--asr-model DIR` uses
them instead. VAD is the genuine FSMN-VAD; punctuation is the tiny CT-Transformer (the real
one is a 471k-word vocab model, so the punctuation share here is understated).

A random model emits a different number of tokens per second than a trained one, which changes
the decoder's work; `chars_per_audio_s` is reported so the reader can compare (a trained
Mandarin model emits about 4-5 characters per second of speech).

RTF = wall time of `SpeechRecognizer.recognize(path)` / audio duration (decode, VAD, ASR,
punctuation), after one warm-up call; best and median of `reps`.
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
    device: str,
    threads: int,
    clips: dict[int, Path],
    batch_sizes: list[int],
    reps: int,
    reps_long: int,
    own_pids: list[int],
    quiet_s: float,
    random_weights: bool,
    size: str,
) -> dict[str, Any]:
    loaded = child.call(cmd="load", name="engine", dirs=dirs, device=device, threads=threads)
    log(
        f"engine: {size} model ({loaded['asr_params_m']} M params) loaded on "
        f"{loaded['device_name']} in {loaded['load_s']} s"
    )
    background = wait_quiet(own_pids, quiet_s)
    watch = CpuWatch(own_pids)
    warm = clips[min(clips)]
    res = child.call(
        cmd="rtf",
        name="engine",
        clips=[[s, str(p)] for s, p in sorted(clips.items())],
        batch_sizes=batch_sizes,
        reps=reps,
        reps_long=reps_long,
        warmup=str(warm),
    )
    cpu = watch.stop()
    child.call(cmd="unload", name="engine")
    for row in res["rows"]:
        log(
            f"engine {row['clip_s']} s clip, batch_size_s={row['batch_size_s']}: RTF best "
            f"{row['rtf_best']}, median {row['rtf_median']}"
        )
    return {
        "device": loaded["device"],
        "device_name": loaded["device_name"],
        "torch_threads": loaded["torch_threads"],
        "model": {
            "size": size,
            "random_weights": random_weights,
            "asr_params_m": loaded["asr_params_m"],
            "asr_model_pt_mb": loaded["asr_model_pt_mb"],
            "asr_dir": dirs["asr"],
        },
        "load_s": loaded["load_s"],
        "process_rss_mb_after_load": loaded["rss_mb"],
        "gpu_mb_after_load": loaded.get("gpu_allocated_mb"),
        "gpu_peak_allocated_mb": res.get("gpu_peak_allocated_mb"),
        "gpu_reserved_mb": res.get("gpu_reserved_mb"),
        "rss_mb_before_trim": res.get("rss_mb_before_trim"),
        "rss_mb_after_trim": res.get("rss_mb_after_trim"),
        "warmup_s": res["warmup_s"],
        "rows": res["rows"],
        "background_cores_before": background,
        "cpu": cpu,
    }
