"""The engine process: SpeechRecognizer called directly, driven over stdin/stdout by the driver.

`python -m scripts.bench.child` imports FunASR once, says `ready`, then serves one JSON command
per stdin line (`{"cmd": "load" | "loop" | "rtf" | "batch" | "unload" | "quit", ...}`, see the
cmd_ functions) and answers one JSON line on stdout prefixed with CHILD_PREFIX (FunASR prints to
stdout too), with the process's RSS. Its own process keeps the driver free of torch and gives the
direct loop a worker's environment (threads, allocator). gpu_engine.py measures with the same
`load`, `timed` and `cell`, importing this module once its environment is set up.
"""

from __future__ import annotations

import ctypes
import gc
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_started = time.perf_counter()
# The timed import: FunASR (torch, sklearn, transformers...) is what a worker waits for at start;
# the recognizer module itself imports it lazily, so import it here, before saying "ready".
import funasr.auto.auto_model  # noqa: E402, F401
import torch  # noqa: E402

from src.asr.recognizer import BatchRequest, SpeechRecognizer, Transcript  # noqa: E402

IMPORT_S = time.perf_counter() - _started

from scripts.bench.common import CHILD_PREFIX, hwm_mb, rss_mb  # noqa: E402
from src.vocabulary import Stage  # noqa: E402

Audio = Any  # a path, or float32 samples where PyAV is missing (gpu_engine.py)
_models: dict[str, SpeechRecognizer] = {}


def sync(device: str) -> None:
    """Wait for the GPU, so a wall time covers the work it was handed."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gpu_mb(device: str) -> dict[str, float]:
    """CUDA allocator figures (MB): allocated now, peak allocated, reserved; {} on CPU."""
    if not device.startswith("cuda"):
        return {}
    cuda = torch.cuda
    now = {"allocated": cuda.memory_allocated(), "peak_allocated": cuda.max_memory_allocated()}
    now["reserved"] = cuda.memory_reserved()
    return {f"gpu_{k}_mb": round(v / 1024**2, 1) for k, v in now.items()}


def load(dirs: dict[str, Any], device: str, threads: int) -> tuple[SpeechRecognizer, float]:
    """The recognizer on `device`, and how long building it took (files read, model moved)."""
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rec = SpeechRecognizer(
        asr_model=str(dirs["asr"]),
        vad_model=str(dirs["vad"]),
        punc_model=str(dirs["punc"]),
        model_root=Path(dirs["asr"]).parent,
        device=device,
        cpu_threads=threads,
    )
    sync(rec.device)
    return rec, time.perf_counter() - t0


def params_m(rec: SpeechRecognizer) -> float:
    return round(sum(p.numel() for p in rec._model.model.parameters()) / 1e6, 1)


def timed(
    rec: SpeechRecognizer, audio: Audio, batch_size_s: int, hotwords: Sequence[str] = ()
) -> dict[str, float]:
    """One recognition with its stage split (decode, VAD, ASR, punctuation) from progress events."""
    marks: dict[str, float] = {}

    def progress(stage: Stage, _fraction: float) -> None:
        marks.setdefault(stage.value, time.perf_counter())

    sync(rec.device)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tr = rec.recognize(audio, batch_size_s=batch_size_s, hotwords=hotwords, progress=progress)
    sync(rec.device)
    wall = time.perf_counter() - t0
    vad_t0 = marks.get(Stage.VAD.value, t0)
    asr_t0 = marks.get(Stage.RECOGNITION.value, t0)
    punc_t0 = marks.get(Stage.PUNCTUATION.value, t0 + wall)
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
        "duration": tr.duration,
        "decode_s": vad_t0 - t0,  # PyAV decode + resample (CPU)
        "vad_s": asr_t0 - vad_t0,
        "asr_s": punc_t0 - asr_t0,
        "post_asr_s": t0 + wall - punc_t0,  # punctuation + assembly
        "chars": len(tr.text.replace(" ", "")),
        "segments": len(tr.speech_segments),
        "sentences": len(tr.sentences),
    }


def cell(
    rec: SpeechRecognizer,
    audio: Audio,
    batch_size_s: int,
    reps: int,
    *,
    hotwords: Sequence[str] = (),
    digits: int = 4,
    max_s: float = math.inf,
) -> dict[str, Any]:
    """`reps` timed calls (fewer once they have taken `max_s`): RTF best and median, the best
    run's stage split; RTF rounded to `digits`, seconds to one digit fewer."""
    runs = [timed(rec, audio, batch_size_s, hotwords)]
    while len(runs) < reps and sum(r["wall_s"] for r in runs) < max_s:
        runs.append(timed(rec, audio, batch_size_s, hotwords))
    walls = sorted(r["wall_s"] for r in runs)
    best = min(runs, key=lambda r: r["wall_s"])
    stages = ("decode_s", "vad_s", "asr_s", "post_asr_s")
    return {
        "reps": len(runs),
        "rtf_best": round(best["wall_s"] / best["duration"], digits),
        "rtf_median": round(statistics.median_high(walls) / best["duration"], digits),
        "wall_s_all": [round(w, digits - 1) for w in walls],
        "cpu_s_best": round(best["cpu_s"], 3),
        **{k: round(best[k], digits - 1) for k in stages},
        "chars_per_audio_s": round(best["chars"] / best["duration"], 2),
        "segments": best["segments"],
        "sentences": best["sentences"],
    }


# --- the driver's commands ------------------------------------------------------------------------


def cmd_load(cmd: dict[str, Any]) -> dict[str, Any]:
    rec, took = load(cmd["dirs"], cmd.get("device", "cpu"), int(cmd.get("threads", 0)))
    _models[cmd["name"]] = rec
    cuda = rec.device.startswith("cuda") and torch.cuda.is_available()
    return {
        "load_s": round(took, 2),
        "device": rec.device,
        "device_name": torch.cuda.get_device_name(torch.device(rec.device)) if cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "asr_params_m": params_m(rec),
        "asr_model_pt_mb": round(
            (Path(cmd["dirs"]["asr"]) / "model.pt").stat().st_size / 1024**2, 1
        ),
        **gpu_mb(rec.device),
    }


def cmd_loop(cmd: dict[str, Any]) -> dict[str, Any]:
    """Recognize each file once, in order, as a worker would (path in, decode included)."""
    rec, batch_size_s = _models[cmd["name"]], int(cmd.get("batch_size_s", 500))
    if cmd.get("warmup") and cmd["files"]:
        rec.recognize(cmd["files"][0], batch_size_s=batch_size_s)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    done = [rec.recognize(path, batch_size_s=batch_size_s) for path in cmd["files"]]
    return {
        "wall_s": round(time.perf_counter() - t0, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
        "processing_s": [tr.processing_time for tr in done],
        "audio_s": round(sum(tr.duration for tr in done), 3),
        "n": len(done),
    }


def cmd_rtf(cmd: dict[str, Any]) -> dict[str, Any]:
    rec = _models[cmd["name"]]
    warmup_s = None
    if cmd.get("warmup"):
        t0 = time.perf_counter()
        rec.recognize(cmd["warmup"], batch_size_s=300)
        warmup_s = round(time.perf_counter() - t0, 2)
    rows = []
    for seconds, path in cmd["clips"]:
        reps = int(cmd.get("reps_long" if seconds > 30 else "reps", cmd.get("reps", 1)))
        for batch in cmd["batch_sizes"]:
            row = {"clip_s": seconds, "batch_size_s": batch, **cell(rec, path, int(batch), reps)}
            rows.append(row)
    return {"warmup_s": warmup_s, "rows": rows, **gpu_mb(rec.device), **_trim()}


def _pass(rec: SpeechRecognizer, files: list[str], jobs: int) -> tuple[float, list[Any]]:
    """All files once: one by one (jobs=1, as the worker does without batching) or in groups."""
    sync(rec.device)
    t0 = time.perf_counter()
    if jobs == 1:
        out: list[Any] = [rec.recognize(f) for f in files]
    else:
        out = []
        for i in range(0, len(files), jobs):
            out += rec.recognize_batch([BatchRequest(audio=f) for f in files[i : i + jobs]])
    sync(rec.device)
    return time.perf_counter() - t0, out


def _prep_rss_mb() -> float:
    """What the prep processes hold (they load FunASR and the VAD, not the ASR model)."""
    return round(sum(rss_mb(c.pid) for c in multiprocessing.active_children() if c.pid), 1)


def cmd_batch(cmd: dict[str, Any]) -> dict[str, Any]:
    """Cross-job batching against one-by-one, alternating the order each round; with
    `pipeline` ({"waves": [W, ...], "processes": P, "passes_of": K}) also passes of K*W jobs
    whose members P prep processes decode and cut while the ASR model runs waves of W."""
    rec, files = _models[cmd["name"]], cmd["files"]
    pipe = cmd.get("pipeline") or {}
    # A mode is (jobs per pass, jobs per ASR wave); wave 0 = no prep processes, one wave.
    modes = [(1, 0), *((jobs, 0) for jobs in cmd["sizes"])]
    modes += [(int(pipe.get("passes_of", 4)) * w, w) for w in pipe.get("waves", [])]
    pool = None
    if pipe.get("waves"):
        rec.start_prep(int(pipe["processes"]), 1)
        pool = rec.prep_pool

    def use(wave: int) -> None:
        rec.prep_pool, rec.wave_jobs = (pool, wave) if wave else (None, 0)

    for _, wave in modes[1:]:
        use(wave)
        _pass(rec, files[:2], 2)  # warm-up, every path
    walls: dict[tuple[int, int], list[float]] = {m: [] for m in modes}
    same: dict[tuple[int, int], tuple[int, int]] = {(1, 0): (len(files), len(files))}
    reference: list[Any] = []
    for rnd in range(int(cmd.get("rounds", 2))):
        for mode in modes if rnd % 2 == 0 else modes[::-1]:
            use(mode[1])
            wall, out = _pass(rec, files, mode[0])
            walls[mode].append(round(wall, 3))
            if mode == (1, 0):
                reference = out
            else:  # round 0 runs one by one first, so there is always a reference
                pairs = list(zip(reference, out, strict=True))
                text = [isinstance(b, Transcript) and a.text == b.text for a, b in pairs]
                times = [
                    t and a.sentences == b.sentences for t, (a, b) in zip(text, pairs, strict=True)
                ]
                same[mode] = (sum(text), sum(times))
    prep_rss = _prep_rss_mb() if pool is not None else None
    rec.prep_pool = pool
    rec.stop_prep()
    audio = sum(t.duration for t in reference)
    rows = [
        {
            "jobs": jobs,
            "wave": wave,
            "prep_processes": int(pipe["processes"]) if wave else 0,
            "wall_s_all": walls[(jobs, wave)],
            "wall_s_best": min(walls[(jobs, wave)]),
            "clips_per_s": round(len(files) / min(walls[(jobs, wave)]), 3),
            "rtf": round(min(walls[(jobs, wave)]) / audio, 4),
            "speedup": round(min(walls[(1, 0)]) / min(walls[(jobs, wave)]), 3),
            "identical": same[(jobs, wave)][1],
            "same_text": same[(jobs, wave)][0],
        }
        for jobs, wave in modes
    ]
    return {
        "clips": len(files),
        "audio_s": round(audio, 1),
        "rows": rows,
        "prep_rss_mb": prep_rss,
        **gpu_mb(rec.device),
    }


def _trim() -> dict[str, Any]:
    """RSS before and after glibc's malloc_trim(0), at the end (so no timing is affected): how
    much of the process's RSS is heap that was freed (load-time copies) but never returned."""
    before = rss_mb(os.getpid())
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return {}
    return {"rss_mb_before_trim": before, "rss_mb_after_trim": rss_mb(os.getpid())}


def cmd_unload(cmd: dict[str, Any]) -> dict[str, Any]:
    _models.pop(cmd["name"], None)
    gc.collect()
    return {}


def cmd_quit(cmd: dict[str, Any]) -> dict[str, Any]:
    _answer({"ok": True})
    raise SystemExit(0)


def _answer(payload: dict[str, Any]) -> None:
    pid = os.getpid()
    payload |= {"rss_mb": rss_mb(pid), "hwm_mb": hwm_mb(pid)}
    sys.stdout.write(CHILD_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def main() -> int:
    _answer({"ready": True, "import_s": round(IMPORT_S, 2), "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        run = globals().get(f"cmd_{cmd.get('cmd')}")  # cmd_load, cmd_loop, cmd_rtf, ...
        try:
            if run is None:
                raise ValueError(f"unknown command {cmd.get('cmd')!r}")
            _answer({"ok": True, **run(cmd)})
        except Exception as exc:
            tb = traceback.format_exc()
            _answer({"ok": False, "error": f"{type(exc).__name__}: {exc}", "tb": tb})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
