"""Engine speed on a GPU box: full-size SeACo-Paraformer (random weights) through SpeechRecognizer.

Self-contained, for an offline accelerator machine that has torch but not the project's venv:
FunASR and the other missing packages are installed from wheels carried in `.whl/`, and the
genuine FSMN-VAD files are carried in `.whl/vad-fsmn/` (the box cannot `pip download` them):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:. python3 scripts/bench/gpu_engine.py --device cuda --out $OUT

What it does, all in one process:

1. builds the models under `--work`: `tests/support/tiny_models.build_seaco_paraformer(
   size="full")` (FunASR's SeacoParaformer with the published dimensions, randomly initialised
   from a fixed seed), the tiny CT-punc (`build_ct_punc`), and copies the genuine FSMN-VAD dir;
2. loops the committed `tests/fixtures/speech_pause_speech.wav` (speech, pause, speech; 16 kHz)
   to 10 s, 60 s and 300 s WAV clips (stdlib `wave`, no PyAV needed to write them);
3. loads the project's `src.asr.recognizer.SpeechRecognizer` (FunASR `AutoModel` with the
   VAD and punctuation models) on `--device`, timing the load;
4. after one warm-up call, times `recognize(path, batch_size_s=B)` for every clip and B in
   `--batch-sizes` (`--reps` times each; best and median kept), with `torch.cuda.synchronize()`
   around each call and the CUDA allocator's peak per cell; RTF = wall time / audio seconds,
   split into decode (PyAV), VAD, ASR and post-ASR (punctuation + assembly) from the
   recognizer's progress events; one extra row uses the service's default hotwords
   (`src/asr/hotwords.txt`, SeACo biasing on);
5. on a GPU run, loads the same models on the CPU and times one clip there too, if the time
   budget allows;
6. writes `<out>/gpu_engine.json` and prints a table.

If PyAV cannot be imported, a stand-in `av` module lets `src.media.audio` import, and the clips
are passed as float32 arrays (decode excluded; `input` says which). The random model emits
random characters, at a rate unlike a trained model's: `chars_per_audio_s` is reported.

`--quick`: one 10 s clip, one batch size, one rep (to prove the chain on a CPU box).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
import types
import wave
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FIXTURE_WAV = ROOT / "tests" / "fixtures" / "speech_pause_speech.wav"
CARRIED_VAD = ROOT / ".whl" / "vad-fsmn"
HOTWORDS_FILE = ROOT / "src" / "asr" / "hotwords.txt"
T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[gpu_engine {time.perf_counter() - T0:7.1f}s] {message}", flush=True)


def elapsed() -> float:
    return time.perf_counter() - T0


# --- environment -----------------------------------------------------------------------------


def cpu_budget() -> dict[str, Any]:
    """CPUs this process may really use: affinity, capped by a cgroup v2 quota if any."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 1
    quota = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            quota = float(text[0]) / float(text[1])
    except (OSError, ValueError, IndexError):
        pass
    usable = affinity if quota is None else max(1, min(affinity, int(quota)))
    return {
        "os_cpu_count": os.cpu_count(),
        "affinity": affinity,
        "cgroup_quota": quota,
        "usable": usable,
    }


def dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def fbank_backend() -> str:
    """Which fbank FunASR's WavFrontend uses: torchaudio's, else kaldi-native-fbank."""
    from funasr.utils import fbank

    if getattr(fbank, "_HAS_TORCHAUDIO", False):
        return "torchaudio"
    return "kaldi-native-fbank" if getattr(fbank, "_knf", None) is not None else "none"


def import_recognizer() -> tuple[Any, Any, Any, str, str | None]:
    """(SpeechRecognizer, Stage, read_hotwords_file, input mode, why PyAV is missing)."""
    why = None
    try:
        import av
        import av.audio.resampler
        import av.container
        import av.logging  # noqa: F401

        mode = "path"
    except Exception as exc:  # ImportError, or OSError from a bundled library
        why = f"{type(exc).__name__}: {exc}"
        for name in [m for m in sys.modules if m == "av" or m.startswith("av.")]:
            del sys.modules[name]
        _install_av_stand_in()
        mode = "array"
    from src.asr.hotwords import read_hotwords_file
    from src.asr.recognizer import SpeechRecognizer, Stage

    return SpeechRecognizer, Stage, read_hotwords_file, mode, why


def _install_av_stand_in() -> None:
    """Just enough of `av` for `src.media.audio` to import; decoding is never called."""

    class _Missing:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("PyAV is not installed (stand-in module)")

    av = types.ModuleType("av")
    av.__version__ = "0.0.0-stand-in"
    av.FFmpegError = type("FFmpegError", (Exception,), {})
    av.time_base = 1_000_000
    av.open = _Missing
    av_logging = types.ModuleType("av.logging")
    av_logging.set_level = lambda level: None
    av_audio = types.ModuleType("av.audio")
    av_resampler = types.ModuleType("av.audio.resampler")
    av_resampler.AudioResampler = _Missing
    av_container = types.ModuleType("av.container")
    av_container.InputContainer = _Missing
    av.logging, av.audio, av.container = av_logging, av_audio, av_container
    av_audio.resampler = av_resampler
    sys.modules.update(
        {
            "av": av,
            "av.logging": av_logging,
            "av.audio": av_audio,
            "av.audio.resampler": av_resampler,
            "av.container": av_container,
        }
    )


# --- models and clips ------------------------------------------------------------------------


def find_vad_dir(explicit: str | None) -> Path:
    """--vad-dir, else the carried copy in .whl/vad-fsmn, else a local test cache."""
    files = ("am.mvn", "config.yaml", "configuration.json", "model.pt")
    candidates = [Path(explicit)] if explicit else []
    candidates.append(CARRIED_VAD)
    candidates += sorted((ROOT / "tests" / ".cache" / "models").glob("*/vad-fsmn"))
    for cand in candidates:
        if all((cand / f).is_file() for f in files):
            return cand
    raise SystemExit(
        f"no FSMN-VAD dir found (tried {[str(c) for c in candidates]}); copy "
        "tests/.cache/models/<key>/vad-fsmn into .whl/vad-fsmn or pass --vad-dir"
    )


def build_models(work: Path, size: str, vad_src: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    from tests.support.tiny_models import build_ct_punc, build_seaco_paraformer

    models = work / "models"
    asr = models / f"asr-seaco-{size}"
    punc = models / "punc-ct-tiny"
    vad = models / "vad-fsmn"
    info: dict[str, Any] = {}
    if not (asr / "model.pt").is_file():
        if asr.exists():
            shutil.rmtree(asr)
        t = time.perf_counter()
        build_seaco_paraformer(asr, size=size)
        info["asr_build_s"] = round(time.perf_counter() - t, 2)
    else:
        info["asr_build_s"] = "cached"
    if not (punc / "model.pt").is_file():
        build_ct_punc(punc)
    if not (vad / "model.pt").is_file():
        shutil.copytree(vad_src, vad, dirs_exist_ok=True)
    info["asr_model_pt_mb"] = round((asr / "model.pt").stat().st_size / 1024**2, 1)
    info["vad_source"] = str(vad_src)
    return {"asr": asr, "vad": vad, "punc": punc}, info


def read_wav(path: Path) -> tuple[Any, int]:
    import numpy as np

    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16-bit PCM")
        rate, channels = w.getframerate(), w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.reshape(-1, channels)[:, 0].copy(), rate


def make_clip(seconds: int, dest_dir: Path) -> tuple[Path, Any]:
    """The fixture looped to `seconds`: a 16 kHz mono WAV, and the same as float32 samples."""
    import numpy as np

    samples, rate = read_wav(FIXTURE_WAV)
    if rate != 16000:
        raise SystemExit(f"{FIXTURE_WAV}: expected 16 kHz, got {rate}")
    reps = int(np.ceil(seconds * rate / len(samples)))
    looped = np.tile(samples, reps)[: seconds * rate]
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"voice_{seconds}s.wav"
    with wave.open(str(dest), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(looped.astype("<i2").tobytes())
    return dest, (looped.astype(np.float32) / 32768.0)


# --- timing ----------------------------------------------------------------------------------


class Bench:
    def __init__(self, rec: Any, stage: Any, device: str, mode: str) -> None:
        self.rec, self.stage, self.device, self.mode = rec, stage, device, mode

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def call(self, clip: tuple[Path, Any], batch_size_s: int, hotwords: list[str]) -> Any:
        audio = str(clip[0]) if self.mode == "path" else clip[1]
        return self.rec.recognize(audio, batch_size_s=batch_size_s, hotwords=hotwords)

    def timed(self, clip: tuple[Path, Any], batch_size_s: int, hotwords: list[str]) -> dict:
        marks: dict[str, float] = {}
        st = self.stage

        def progress(stage: Any, _fraction: float) -> None:
            marks.setdefault(stage.value, time.perf_counter())

        audio = str(clip[0]) if self.mode == "path" else clip[1]
        self.sync()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        tr = self.rec.recognize(
            audio, batch_size_s=batch_size_s, hotwords=hotwords, progress=progress
        )
        self.sync()
        wall = time.perf_counter() - t0
        vad_t0 = marks.get(st.VAD.value, t0)
        asr_t0 = marks.get(st.RECOGNITION.value, t0)
        punc_t0 = marks.get(st.PUNCTUATION.value, t0 + wall)
        return {
            "wall_s": wall,
            "cpu_s": time.process_time() - cpu0,
            "duration": tr.duration,
            "decode_s": vad_t0 - t0,
            "vad_s": asr_t0 - vad_t0,
            "asr_s": punc_t0 - asr_t0,
            "post_asr_s": t0 + wall - punc_t0,
            "chars": len(tr.text.replace(" ", "")),
            "segments": len(tr.speech_segments),
            "sentences": len(tr.sentences),
        }

    def cell(
        self,
        seconds: int,
        clip: tuple[Path, Any],
        batch_size_s: int,
        reps: int,
        hotwords: list[str],
        max_cell_s: float = 20.0,
    ) -> dict[str, Any]:
        peak = None
        if self.cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()
        runs = [self.timed(clip, batch_size_s, hotwords)]
        # Further reps only while the cell stays short (the 300 s clip on a CPU is slow).
        while len(runs) < reps and sum(r["wall_s"] for r in runs) < max_cell_s:
            runs.append(self.timed(clip, batch_size_s, hotwords))
        if self.cuda:
            import torch

            peak = {
                "max_allocated_mb": round(torch.cuda.max_memory_allocated() / 1024**2, 1),
                "max_reserved_mb": round(torch.cuda.max_memory_reserved() / 1024**2, 1),
            }
        walls = sorted(r["wall_s"] for r in runs)
        best = min(runs, key=lambda r: r["wall_s"])
        return {
            "device": self.device,
            "clip_s": seconds,
            "batch_size_s": batch_size_s,
            "hotwords": len(hotwords),
            "reps": len(runs),
            "rtf_best": round(best["wall_s"] / best["duration"], 5),
            "rtf_median": round(statistics.median(walls) / best["duration"], 5),
            "wall_s_all": [round(w, 4) for w in walls],
            "cpu_s_best": round(best["cpu_s"], 3),
            "decode_s": round(best["decode_s"], 4),
            "vad_s": round(best["vad_s"], 4),
            "asr_s": round(best["asr_s"], 4),
            "post_asr_s": round(best["post_asr_s"], 4),
            "chars_per_audio_s": round(best["chars"] / best["duration"], 2),
            "segments": best["segments"],
            "sentences": best["sentences"],
            "gpu_peak": peak,
        }


def load(cls: Any, dirs: dict[str, Path], device: str, threads: int) -> tuple[Any, dict[str, Any]]:
    import torch

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rec = cls(
        asr_model=str(dirs["asr"]),
        vad_model=str(dirs["vad"]),
        punc_model=str(dirs["punc"]),
        model_root=dirs["asr"].parent,
        device=device,
        cpu_threads=threads,
    )
    if cuda:
        torch.cuda.synchronize()
    info: dict[str, Any] = {
        "device": rec.device,
        "load_s": round(time.perf_counter() - t0, 3),
        "recognizer_load_time_s": round(rec.load_time, 3),
        "torch_threads": torch.get_num_threads(),
        "asr_params_m": round(sum(p.numel() for p in rec._model.model.parameters()) / 1e6, 1),
        "asr_param_dtype": str(next(rec._model.model.parameters()).dtype),
    }
    if cuda:
        info["gpu_allocated_after_load_mb"] = round(torch.cuda.memory_allocated() / 1024**2, 1)
        info["gpu_peak_during_load_mb"] = round(torch.cuda.max_memory_allocated() / 1024**2, 1)
    return rec, info


def warm_up(bench: Bench, clip: tuple[Path, Any]) -> float:
    bench.sync()
    t0 = time.perf_counter()
    bench.call(clip, 300, [])
    bench.sync()
    return round(time.perf_counter() - t0, 3)


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (
        f"{'device':<7}{'clip_s':>7}{'batch':>6}{'hw':>4}{'RTF best':>10}{'RTF med':>10}"
        f"{'wall_s':>9}{'decode':>8}{'vad':>8}{'asr':>8}{'post':>8}{'ch/s':>6}{'seg':>5}"
        f"{'peak_MB':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        peak = r["gpu_peak"]["max_allocated_mb"] if r["gpu_peak"] else "-"
        print(
            f"{r['device']:<7}{r['clip_s']:>7}{r['batch_size_s']:>6}{r['hotwords']:>4}"
            f"{r['rtf_best']:>10.5f}{r['rtf_median']:>10.5f}{min(r['wall_s_all']):>9.3f}"
            f"{r['decode_s']:>8.3f}{r['vad_s']:>8.3f}{r['asr_s']:>8.3f}{r['post_asr_s']:>8.3f}"
            f"{r['chars_per_audio_s']:>6}{r['segments']:>5}{peak!s:>9}",
            flush=True,
        )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--out", required=True, help="folder for gpu_engine.json")
    p.add_argument("--work", default="/tmp/gpu_engine_work", help="models and clips go here")
    p.add_argument("--size", choices=("full", "tiny"), default="full", help="ASR model size")
    p.add_argument("--vad-dir", default=None, help="genuine FSMN-VAD dir (default: .whl/vad-fsmn)")
    p.add_argument("--clips", default="10,60,300", help="clip lengths, seconds")
    p.add_argument("--batch-sizes", default="60,300,500", help="batch_size_s values")
    p.add_argument(
        "--reps",
        type=int,
        default=3,
        help="timed calls per cell (fewer once a cell has taken 20 s)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: usable CPUs)")
    p.add_argument("--cpu-clip", type=int, default=60, help="clip for the CPU comparison")
    p.add_argument("--cpu-reps", type=int, default=1, help="timed CPU calls")
    p.add_argument("--no-cpu", action="store_true", help="skip the CPU comparison")
    p.add_argument(
        "--budget-s",
        type=float,
        default=200.0,
        help="skip optional parts (CPU comparison) once this much time has gone",
    )
    p.add_argument("--quick", action="store_true", help="one 10 s clip, one batch size, one rep")
    args = p.parse_args(argv)
    if args.quick:
        args.clips, args.batch_sizes, args.reps, args.no_cpu = "10", "300", 1, True
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work)
    clips_s = [int(x) for x in args.clips.split(",") if x]
    batch_sizes = [int(x) for x in args.batch_sizes.split(",") if x]
    cpus = cpu_budget()
    threads = args.threads or cpus["usable"]
    result: dict[str, Any] = {"args": vars(args), "cpus": cpus, "threads": threads}

    t = time.perf_counter()
    import torch

    torch_import_s = time.perf_counter() - t
    t = time.perf_counter()
    import funasr.auto.auto_model  # noqa: F401  (the slow import: every model family)

    rec_cls, stage, read_hotwords_file, mode, av_missing = import_recognizer()
    result["import_s"] = {
        "torch": round(torch_import_s, 2),
        "funasr_and_recognizer": round(time.perf_counter() - t, 2),
    }
    result["input"] = mode
    if av_missing:
        result["av_missing"] = av_missing
        log(f"PyAV unavailable ({av_missing}): passing float32 arrays, decode not timed")

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device} but torch.cuda.is_available() is False")
    cuda = device.startswith("cuda")
    result["env"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(torch.device(device)) if cuda else None,
        "funasr": dist_version("funasr"),
        "av": dist_version("av"),
        "numpy": dist_version("numpy"),
        "torchaudio": dist_version("torchaudio"),
        "fbank_backend": fbank_backend(),
        "platform": platform.platform(),
    }
    log(f"env: {json.dumps(result['env'])} cpus={cpus} threads={threads}")

    vad_src = find_vad_dir(args.vad_dir)
    t = time.perf_counter()
    dirs, model_info = build_models(work, args.size, vad_src)
    model_info["build_total_s"] = round(time.perf_counter() - t, 2)
    model_info["size"] = args.size
    model_info["random_weights"] = True
    result["model"] = model_info
    log(f"models ready: {model_info}")

    clip_set = sorted(set(clips_s) | ({args.cpu_clip} if cuda and not args.no_cpu else set()))
    clips = {s: make_clip(s, work / "clips") for s in clip_set}
    warm_clip = clips[min(clip_set)]
    hotwords = read_hotwords_file(HOTWORDS_FILE)

    rec, load_info = load(rec_cls, dirs, device, threads)
    result["load"] = load_info
    log(f"loaded: {load_info}")
    bench = Bench(rec, stage, rec.device, mode)
    result["warmup_s"] = warm_up(bench, warm_clip)
    log(f"warm-up {result['warmup_s']} s")

    rows: list[dict[str, Any]] = []
    result["rows"] = rows

    def save() -> None:
        result["total_s"] = round(elapsed(), 1)
        (out / "gpu_engine.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))

    for seconds in clips_s:
        for batch in batch_sizes:
            row = bench.cell(seconds, clips[seconds], batch, args.reps, [])
            rows.append(row)
            log(
                f"{row['device']} {seconds}s batch {batch}: RTF {row['rtf_best']} "
                f"(median {row['rtf_median']}), peak {row['gpu_peak']}"
            )
            save()
    # One row as the service runs by default: SeACo biased by src/asr/hotwords.txt.
    hw_clip = 60 if 60 in clips_s else max(clips_s)
    hw_batch = 300 if 300 in batch_sizes else batch_sizes[0]
    if hotwords:
        row = bench.cell(hw_clip, clips[hw_clip], hw_batch, args.reps, hotwords)
        rows.append(row)
        log(
            f"{row['device']} {hw_clip}s batch {hw_batch} hotwords {hotwords}: "
            f"RTF {row['rtf_best']}"
        )
        save()

    if cuda and not args.no_cpu:
        if elapsed() + 60 > args.budget_s:
            result["cpu_skipped"] = f"{elapsed():.0f} s gone of a {args.budget_s:.0f} s budget"
            log(f"CPU comparison skipped: {result['cpu_skipped']}")
        else:
            del bench, rec
            import gc

            gc.collect()
            torch.cuda.empty_cache()
            cpu_rec, cpu_load = load(rec_cls, dirs, "cpu", threads)
            result["cpu_load"] = cpu_load
            log(f"CPU loaded: {cpu_load}")
            cpu_bench = Bench(cpu_rec, stage, "cpu", mode)
            result["cpu_warmup_s"] = warm_up(cpu_bench, warm_clip)
            batch = 300 if 300 in batch_sizes else batch_sizes[0]
            row = cpu_bench.cell(args.cpu_clip, clips[args.cpu_clip], batch, args.cpu_reps, [])
            rows.append(row)
            log(f"cpu {args.cpu_clip}s batch {batch}: RTF {row['rtf_best']}")

    save()
    print()
    print_table(rows)
    print(
        f"\nload {load_info['load_s']} s on {load_info['device']} "
        f"({result['env']['gpu'] or 'cpu'}), warm-up {result['warmup_s']} s, "
        f"input={mode}, total {result['total_s']} s -> {out / 'gpu_engine.json'}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
