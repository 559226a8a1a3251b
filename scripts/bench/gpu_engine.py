"""Engine speed on a GPU box: full-size SeACo-Paraformer (random weights) through SpeechRecognizer.

Self-contained, for an offline accelerator machine that has torch but not the project's venv:
FunASR and the other missing packages are installed from wheels carried in `.whl/`, and the
genuine FSMN-VAD files are carried in `.whl/vad-fsmn/` (the box cannot `pip download` them):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:. python3 scripts/bench/gpu_engine.py --device cuda --out $OUT

In one process: build the models under `--work` (tests/support/tiny_models.py; the VAD copied),
loop tests/fixtures/speech_pause_speech.wav to 10/60/300 s WAV clips, load the recognizer (timed),
warm up, then time `recognize(path, batch_size_s=B)` for every clip and B with the engine child's
functions (child.py: best/median of `--reps`, stage split, CUDA peak per cell), one row with the
service's default hotwords (SeACo biasing on), and, if `--budget-s` allows, one clip on the CPU.
Writes `<out>/gpu_engine.json`. Without PyAV a stand-in `av` lets `src.media.audio` import and
the clips go in as float32 arrays (decode excluded; `input` says so). `--quick`: one 10 s clip,
one batch size, one rep (to prove the chain on a CPU box).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.bench.common import dist, log  # noqa: E402

T0 = time.perf_counter()


def cpu_budget() -> dict[str, Any]:
    """CPUs this process may really use: affinity, capped by a cgroup v2 quota if any."""
    affinity, quota = len(os.sched_getaffinity(0)), None
    cpu_max = Path("/sys/fs/cgroup/cpu.max")
    if cpu_max.is_file() and (parts := cpu_max.read_text().split())[0] != "max":
        quota = float(parts[0]) / float(parts[1])
    usable = affinity if quota is None else max(1, min(affinity, int(quota)))
    return {
        "os_cpu_count": os.cpu_count(),
        "affinity": affinity,
        "cgroup_quota": quota,
        "usable": usable,
    }


def check_av() -> str | None:
    """Why PyAV cannot be used (after installing a stand-in `av` for `src.media.audio`), or None."""
    try:
        import av.audio.resampler
        import av.container
        import av.logging
    except Exception as exc:  # ImportError, or OSError from a bundled library
        for name in [m for m in sys.modules if m == "av" or m.startswith("av.")]:
            del sys.modules[name]

        def missing(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("PyAV is not installed (stand-in module)")

        names = ("av", "av.logging", "av.audio", "av.audio.resampler", "av.container")
        av, logging, audio, resampler, container = (types.ModuleType(n) for n in names)
        av.__dict__.update(__version__="0.0.0-stand-in", time_base=1_000_000, open=missing)
        av.__dict__.update(FFmpegError=type("FFmpegError", (Exception,), {}), logging=logging)
        av.__dict__.update(audio=audio, container=container)
        logging.__dict__.update(set_level=lambda level: None)
        audio.__dict__.update(resampler=resampler)
        resampler.__dict__.update(AudioResampler=missing)
        container.__dict__.update(InputContainer=missing)
        sys.modules.update(zip(names, (av, logging, audio, resampler, container), strict=True))
        return f"{type(exc).__name__}: {exc}"
    return None


def build_models(
    work: Path, size: str, vad_dir: str | None
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The random-weight ASR and punctuation models, and a genuine FSMN-VAD dir copied from
    --vad-dir, .whl/vad-fsmn or the test cache."""
    from tests.support.tiny_models import VAD_FILES, build_ct_punc, build_seaco_paraformer

    tried = [Path(vad_dir)] if vad_dir else []
    tried += [
        ROOT / ".whl" / "vad-fsmn",
        *(ROOT / "tests" / ".cache" / "models").glob("*/vad-fsmn"),
    ]
    vad_src = next((d for d in tried if all((d / f).is_file() for f in VAD_FILES)), None)
    if vad_src is None:
        raise SystemExit(f"no FSMN-VAD dir in {[str(d) for d in tried]}; pass --vad-dir")
    t0, models, info = time.perf_counter(), work / "models", {"asr_build_s": "cached"}
    dirs = {
        "asr": models / f"asr-seaco-{size}",
        "vad": models / "vad-fsmn",
        "punc": models / "punc-ct-tiny",
    }
    if not (dirs["asr"] / "model.pt").is_file():
        shutil.rmtree(dirs["asr"], ignore_errors=True)
        build_seaco_paraformer(dirs["asr"], size=size)  # type: ignore[arg-type]
        info["asr_build_s"] = round(time.perf_counter() - t0, 2)
    if not (dirs["punc"] / "model.pt").is_file():
        build_ct_punc(dirs["punc"])
    shutil.copytree(vad_src, dirs["vad"], dirs_exist_ok=True)
    info["asr_model_pt_mb"] = round((dirs["asr"] / "model.pt").stat().st_size / 1024**2, 1)
    info |= {"vad_source": str(vad_src), "build_total_s": round(time.perf_counter() - t0, 2)}
    return dirs, info | {"size": size, "random_weights": True}


def make_clip(seconds: int, dest_dir: Path, arrays: bool) -> Any:
    """The fixture looped to `seconds`: a 16 kHz mono WAV's path, or its float32 samples."""
    import numpy as np

    from tests.support.audio_samples import SPEECH_WAV, read_wav, write_wav

    samples, rate = read_wav(SPEECH_WAV)
    looped = np.tile(samples, -(-seconds * rate // len(samples)))[: seconds * rate]
    if arrays:
        return looped.astype(np.float32) / 32768.0
    dest_dir.mkdir(parents=True, exist_ok=True)
    return str(write_wav(looped, rate, dest_dir / f"voice_{seconds}s.wav"))


class Bench:
    """One recognizer loaded on a device, timed with the engine child's functions."""

    def __init__(self, dirs: dict[str, Path], device: str, threads: int, warm_clip: Any) -> None:
        import torch

        from scripts.bench import child

        self.child = child
        self.rec, took = child.load(dirs, device, threads)
        self.device, gpu = self.rec.device, child.gpu_mb(self.rec.device)
        self.load = {
            "device": self.device,
            "load_s": round(took, 3),
            "recognizer_load_time_s": round(self.rec.load_time, 3),
            "torch_threads": torch.get_num_threads(),
            "asr_params_m": child.params_m(self.rec),
            "asr_param_dtype": str(next(self.rec._model.model.parameters()).dtype),
        }
        if gpu:
            self.load["gpu_allocated_after_load_mb"] = gpu["gpu_allocated_mb"]
            self.load["gpu_peak_during_load_mb"] = gpu["gpu_peak_allocated_mb"]
        t0 = time.perf_counter()
        child.timed(self.rec, warm_clip, 300)
        self.warmup_s = round(time.perf_counter() - t0, 3)
        log(f"loaded: {self.load}, warm-up {self.warmup_s} s")

    def cell(
        self, seconds: int, clip: Any, batch: int, reps: int, hotwords: list[str]
    ) -> dict[str, Any]:
        import torch

        cuda, mb = self.device.startswith("cuda"), 1024**2
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        row = {
            "device": self.device,
            "clip_s": seconds,
            "batch_size_s": batch,
            "hotwords": len(hotwords),
        }
        row |= self.child.cell(self.rec, clip, batch, reps, hotwords=hotwords, digits=5, max_s=20.0)
        peak = (
            (torch.cuda.max_memory_allocated() / mb, torch.cuda.max_memory_reserved() / mb)
            if cuda
            else None
        )
        row["gpu_peak"] = (
            {"max_allocated_mb": round(peak[0], 1), "max_reserved_mb": round(peak[1], 1)}
            if peak
            else None
        )
        log(f"{self.device} {seconds} s, batch_size_s {batch}, {len(hotwords)} hotwords: {row}")
        return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--out", required=True, help="folder for gpu_engine.json")
    p.add_argument("--work", default="/tmp/gpu_engine_work", help="models and clips go here")
    p.add_argument("--size", choices=("full", "tiny"), default="full", help="ASR model size")
    p.add_argument("--vad-dir", default=None, help="genuine FSMN-VAD dir (default: .whl/vad-fsmn)")
    p.add_argument("--clips", default="10,60,300", help="clip lengths, seconds")
    p.add_argument("--batch-sizes", default="60,300,500", help="batch_size_s values")
    p.add_argument("--reps", type=int, default=3, help="timed calls per cell (fewer after 20 s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: usable CPUs)")
    p.add_argument("--cpu-clip", type=int, default=60, help="clip for the CPU comparison")
    p.add_argument("--cpu-reps", type=int, default=1, help="timed CPU calls")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    p.add_argument("--budget-s", type=float, default=200.0, help="no CPU comparison after this")
    p.add_argument("--quick", action="store_true", help="one 10 s clip, one batch size, one rep")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.batch_sizes, args.reps, args.no_cpu = "10", "300", 1, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips_s, batches = ([int(x) for x in v.split(",") if x] for v in (args.clips, args.batch_sizes))
    cpus = cpu_budget()
    threads = args.threads or cpus["usable"]
    result: dict[str, Any] = {"args": vars(args), "cpus": cpus, "threads": threads}
    t = time.perf_counter()
    import torch

    result["import_s"], t = {"torch": round(time.perf_counter() - t, 2)}, time.perf_counter()
    av_missing = check_av()
    from funasr.utils import fbank

    import scripts.bench.child  # noqa: F401 - timed: FunASR (every model family), the recognizer
    from src.asr.hotwords import read_hotwords_file

    result["import_s"]["funasr_and_recognizer"] = round(time.perf_counter() - t, 2)
    result["input"] = "array" if av_missing else "path"
    if av_missing:
        result["av_missing"] = av_missing
        log(f"PyAV unavailable ({av_missing}): passing float32 arrays, decode not timed")
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit(f"--device {args.device} but torch.cuda.is_available() is False")
    knf = "kaldi-native-fbank" if getattr(fbank, "_knf", None) is not None else "none"
    result["env"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(torch.device(args.device)) if cuda else None,
        **{name: dist(name) for name in ("funasr", "av", "numpy", "torchaudio")},
        # the fbank FunASR's WavFrontend uses: torchaudio's, else kaldi-native-fbank
        "fbank_backend": "torchaudio" if getattr(fbank, "_HAS_TORCHAUDIO", False) else knf,
        "platform": platform.platform(),
    }
    log(f"env: {json.dumps(result['env'])} cpus={cpus} threads={threads}")

    dirs, result["model"] = build_models(Path(args.work), args.size, args.vad_dir)
    cpu_clip = {args.cpu_clip} if cuda and not args.no_cpu else set()
    clips = {
        s: make_clip(s, Path(args.work) / "clips", bool(av_missing)) for s in {*clips_s, *cpu_clip}
    }
    bench = Bench(dirs, args.device, threads, clips[min(clips)])
    result |= {"load": bench.load, "warmup_s": bench.warmup_s, "rows": []}

    def add(row: dict[str, Any]) -> None:
        result["rows"].append(row)
        result["total_s"] = round(time.perf_counter() - T0, 1)
        (out / "gpu_engine.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))

    for seconds in clips_s:
        for batch in batches:
            add(bench.cell(seconds, clips[seconds], batch, args.reps, []))
    # One row as the service runs by default: SeACo biased by src/asr/hotwords.txt.
    batch, hw_clip = 300 if 300 in batches else batches[0], 60 if 60 in clips_s else max(clips_s)
    if hotwords := read_hotwords_file(ROOT / "src" / "asr" / "hotwords.txt"):
        add(bench.cell(hw_clip, clips[hw_clip], batch, args.reps, hotwords))
    if cpu_clip and (gone := time.perf_counter() - T0) + 60 > args.budget_s:
        result["cpu_skipped"] = f"{gone:.0f} s gone of a {args.budget_s:.0f} s budget"
    elif cpu_clip:
        del bench
        gc.collect()
        torch.cuda.empty_cache()
        cpu = Bench(dirs, "cpu", threads, clips[min(clips)])
        result |= {"cpu_load": cpu.load, "cpu_warmup_s": cpu.warmup_s}
        add(cpu.cell(args.cpu_clip, clips[args.cpu_clip], batch, args.cpu_reps, []))
    log(f"{result.get('cpu_skipped', '')} total {result['total_s']} s -> {out / 'gpu_engine.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
