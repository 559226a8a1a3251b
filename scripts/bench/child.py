"""The engine process: SpeechRecognizer called directly, driven over stdin/stdout by the driver.

`python -m scripts.bench.child` imports FunASR once (about 30 s on a 2-core box: torch, sklearn,
transformers...), says `ready`, then serves one JSON command per stdin line and answers one JSON
line on stdout prefixed with `BENCH-JSON ` (FunASR prints to stdout too). Commands:

  {"cmd": "load", "name": "tiny", "dirs": {"asr": .., "vad": .., "punc": ..},
   "device": "cpu", "threads": 1}
  {"cmd": "loop", "name": "tiny", "files": [...], "batch_size_s": 500}     direct-loop throughput
  {"cmd": "rtf", "name": "full", "clips": [[seconds, path], ...], "batch_sizes": [60, 300],
   "reps": 2, "warmup": path}                                                engine RTF grid
  {"cmd": "batch", "name": "full", "files": [...], "sizes": [4, 8], "rounds": 2}
                                      one-by-one against cross-job batches on the same clips
  {"cmd": "unload", "name": "tiny"}   {"cmd": "quit"}

Every answer carries the process's RSS. Running in its own process keeps the driver free of
torch and gives the direct loop the same environment (threads, allocator) as a worker.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

_started = time.perf_counter()
# The timed import: FunASR (torch, sklearn, transformers...) is what a worker waits for at start;
# the recognizer module itself imports it lazily, so import it here, before saying "ready".
import funasr.auto.auto_model  # noqa: E402, F401

from src.asr.recognizer import BatchRequest, SpeechRecognizer, Stage, Transcript  # noqa: E402

IMPORT_S = time.perf_counter() - _started

from scripts.bench.common import CHILD_PREFIX, hwm_mb, rss_mb  # noqa: E402

_models: dict[str, SpeechRecognizer] = {}


def _answer(payload: dict[str, Any]) -> None:
    payload.setdefault("rss_mb", rss_mb(os.getpid()))
    payload.setdefault("hwm_mb", hwm_mb(os.getpid()))
    sys.stdout.write(CHILD_PREFIX + json.dumps(payload) + "\n")
    sys.stdout.flush()


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return "cpu"


def _gpu_mb(device: str) -> dict[str, float]:
    """CUDA allocator figures (MB): allocated now, peak allocated, reserved; {} on CPU."""
    if not device.startswith("cuda"):
        return {}
    import torch

    return {
        "gpu_allocated_mb": round(torch.cuda.memory_allocated() / 1024**2, 1),
        "gpu_peak_allocated_mb": round(torch.cuda.max_memory_allocated() / 1024**2, 1),
        "gpu_reserved_mb": round(torch.cuda.memory_reserved() / 1024**2, 1),
    }


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def load(cmd: dict[str, Any]) -> dict[str, Any]:
    import torch

    dirs = cmd["dirs"]
    t0 = time.perf_counter()
    rec = SpeechRecognizer(
        asr_model=str(dirs["asr"]),
        vad_model=str(dirs["vad"]),
        punc_model=str(dirs["punc"]),
        model_root=Path(dirs["asr"]).parent,
        device=cmd.get("device", "cpu"),
        cpu_threads=int(cmd.get("threads", 0)),
    )
    _models[cmd["name"]] = rec
    params = sum(p.numel() for p in rec._model.model.parameters())
    return {
        "load_s": round(time.perf_counter() - t0, 2),
        "device": rec.device,
        "device_name": _device_name(rec.device),
        "torch_threads": torch.get_num_threads(),
        "asr_params_m": round(params / 1e6, 1),
        "asr_model_pt_mb": round((Path(dirs["asr"]) / "model.pt").stat().st_size / 1024**2, 1),
        **_gpu_mb(rec.device),
    }


def loop(cmd: dict[str, Any]) -> dict[str, Any]:
    """Recognize each file once, in order, as a worker would (path in, decode included)."""
    rec = _models[cmd["name"]]
    if cmd.get("warmup") and cmd["files"]:
        rec.recognize(cmd["files"][0], batch_size_s=int(cmd.get("batch_size_s", 500)))
    per: list[float] = []
    durations: list[float] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for path in cmd["files"]:
        tr = rec.recognize(path, batch_size_s=int(cmd.get("batch_size_s", 500)))
        per.append(tr.processing_time)
        durations.append(tr.duration)
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(time.process_time() - cpu0, 3),
        "processing_s": per,
        "audio_s": round(sum(durations), 3),
        "n": len(per),
    }


def _timed(rec: SpeechRecognizer, path: str, batch_size_s: int) -> dict[str, Any]:
    """One recognition with its stage split (decode+VAD, ASR, punctuation) from progress events."""
    marks: dict[str, float] = {}

    def progress(stage: Stage, _fraction: float) -> None:
        marks.setdefault(stage.value, time.perf_counter())

    _sync(rec.device)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    tr = rec.recognize(path, batch_size_s=batch_size_s, progress=progress)
    _sync(rec.device)
    wall = time.perf_counter() - t0
    vad_t0 = marks.get(Stage.VAD.value, t0)
    asr_t0 = marks.get(Stage.RECOGNITION.value, t0)
    punc_t0 = marks.get(Stage.PUNCTUATION.value, t0 + wall)
    return {
        "wall_s": wall,
        "cpu_s": time.process_time() - cpu0,
        "rtf": wall / tr.duration,
        "decode_s": vad_t0 - t0,  # PyAV decode + resample (CPU)
        "vad_s": asr_t0 - vad_t0,
        "asr_s": punc_t0 - asr_t0,
        "post_asr_s": t0 + wall - punc_t0,  # punctuation + assembly
        "chars": len(tr.text.replace(" ", "")),
        "segments": len(tr.speech_segments),
        "duration": tr.duration,
    }


def rtf(cmd: dict[str, Any]) -> dict[str, Any]:
    rec = _models[cmd["name"]]
    warm = cmd.get("warmup")
    warmup_s = None
    if warm:
        t0 = time.perf_counter()
        rec.recognize(warm, batch_size_s=300)
        warmup_s = round(time.perf_counter() - t0, 2)
    rows = []
    for seconds, path in cmd["clips"]:
        for batch in cmd["batch_sizes"]:
            reps = int(cmd.get("reps", 1))
            if seconds > 30:
                reps = int(cmd.get("reps_long", reps))
            runs = [_timed(rec, path, int(batch)) for _ in range(reps)]
            walls = sorted(r["wall_s"] for r in runs)
            best = min(runs, key=lambda r: r["wall_s"])
            rows.append(
                {
                    "clip_s": seconds,
                    "batch_size_s": batch,
                    "reps": len(runs),
                    "rtf_best": round(best["rtf"], 4),
                    "rtf_median": round(walls[len(walls) // 2] / best["duration"], 4),
                    "wall_s_all": [round(w, 3) for w in walls],
                    "cpu_s_best": round(best["cpu_s"], 3),
                    "decode_s": round(best["decode_s"], 3),
                    "vad_s": round(best["vad_s"], 3),
                    "asr_s": round(best["asr_s"], 3),
                    "post_asr_s": round(best["post_asr_s"], 3),
                    "chars_per_audio_s": round(best["chars"] / best["duration"], 2),
                    "segments": best["segments"],
                }
            )
    return {"warmup_s": warmup_s, "rows": rows, **_gpu_mb(rec.device), **_trim()}


def _pass(rec: SpeechRecognizer, files: list[str], jobs: int) -> tuple[float, list[Any]]:
    """All files once: one by one (jobs=1, as the worker does without batching) or in groups."""
    _sync(rec.device)
    t0 = time.perf_counter()
    if jobs == 1:
        out: list[Any] = [rec.recognize(f) for f in files]
    else:
        out = []
        for i in range(0, len(files), jobs):
            out += rec.recognize_batch([BatchRequest(audio=f) for f in files[i : i + jobs]])
    _sync(rec.device)
    return time.perf_counter() - t0, out


def batch(cmd: dict[str, Any]) -> dict[str, Any]:
    """Cross-job batching against one-by-one, alternating the order each round."""
    rec = _models[cmd["name"]]
    files = cmd["files"]
    modes = [1, *cmd["sizes"]]
    _pass(rec, files[:2], 2)  # warm-up, both paths
    walls: dict[int, list[float]] = {m: [] for m in modes}
    same: dict[int, int] = {}
    same_text: dict[int, int] = {}
    reference: list[Any] = []
    for rnd in range(int(cmd.get("rounds", 2))):
        for jobs in modes if rnd % 2 == 0 else modes[::-1]:
            wall, out = _pass(rec, files, jobs)
            walls[jobs].append(round(wall, 3))
            if jobs == 1:
                reference = out
            else:  # round 0 runs one by one first, so there is always a reference
                same_text[jobs] = sum(
                    isinstance(b, Transcript) and a.text == b.text
                    for a, b in zip(reference, out, strict=True)
                )
                same[jobs] = sum(
                    isinstance(b, Transcript) and a.text == b.text and a.sentences == b.sentences
                    for a, b in zip(reference, out, strict=True)
                )
    audio = sum(t.duration for t in reference)
    best1 = min(walls[1])
    rows = [
        {
            "jobs": jobs,
            "wall_s_all": walls[jobs],
            "wall_s_best": min(walls[jobs]),
            "clips_per_s": round(len(files) / min(walls[jobs]), 3),
            "rtf": round(min(walls[jobs]) / audio, 4),
            "speedup": round(best1 / min(walls[jobs]), 3),
            "identical": same.get(jobs, len(files)),
            "same_text": same_text.get(jobs, len(files)),
        }
        for jobs in modes
    ]
    return {"clips": len(files), "audio_s": round(audio, 1), "rows": rows, **_gpu_mb(rec.device)}


def _trim() -> dict[str, Any]:
    """RSS before and after glibc's malloc_trim(0), at the end (so no timing is affected): how
    much of the process's RSS is heap that was freed (load-time copies) but never returned."""
    import ctypes

    before = rss_mb(os.getpid())
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return {}
    return {"rss_mb_before_trim": before, "rss_mb_after_trim": rss_mb(os.getpid())}


def main() -> int:
    _answer({"ready": True, "import_s": round(IMPORT_S, 2), "pid": os.getpid()})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        name = cmd.get("cmd")
        try:
            if name == "quit":
                _answer({"ok": True})
                return 0
            if name == "load":
                result = load(cmd)
            elif name == "loop":
                result = loop(cmd)
            elif name == "rtf":
                result = rtf(cmd)
            elif name == "batch":
                result = batch(cmd)
            elif name == "unload":
                _models.pop(cmd["name"], None)
                gc.collect()
                result = {}
            else:
                raise ValueError(f"unknown command {name!r}")
            _answer({"ok": True, **result})
        except Exception as exc:
            _answer(
                {"ok": False, "error": f"{type(exc).__name__}: {exc}", "tb": traceback.format_exc()}
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
