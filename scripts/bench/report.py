"""report/PERFORMANCE.md and performance.json from one run's typed results (plus merged extras).

Targets are judged here, never asserted in tests: a miss is reported with its gap and a why built
from the run's own numbers. The words are Jinja templates beside this file: PERFORMANCE.md.j2 and
targets.md.j2 (jinja2 comes with torch, which the benchmark's engine child needs anyway).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from scripts.bench.common import dump_json
from scripts.bench.results import BatchingFigure, EngineFigure, Extra, Result, RunInfo, Target

# The targets for these 2-core machines, and the design's (owner's GPU box) ones.
SUBMIT_P99_MS = 50.0
OVERHEAD_MEDIAN_MS = 30.0
THROUGHPUT_RATIO = 0.97  # the lowest round, not the best (issue 14)
API_RSS_MB = 150.0
WORKER_GROWTH_PCT = 5.0
BURST_WAIT_S = 60.0
GPU_RTF = (0.01, 0.05)
GPU_ALL_DONE_S = 15.0  # 100 voice notes on one H200, batched and pipelined (issue 14)
OPEN_LOOP_RATE = 150.0  # voice notes per second with p99 <= 50 ms, no worker (issue 14)
SUBMIT_CPU_MS = 3.0  # the API's CPU per submit
PEER_RATIO = 3.0  # funasr-server's time until a burst is done / ours
HEALTH_P99_MS = 100.0  # /health while that burst runs


def write(out: Path, result: Result) -> str:
    """Judge the targets, write performance.json and PERFORMANCE.md; return the Markdown."""
    result.targets = sorted(targets(result), key=lambda t: t.name.split(" ", 1)[0])
    dump_json(out / "performance.json", result.model_dump(mode="json", by_alias=True))
    text = render(result)
    (out / "PERFORMANCE.md.tmp").write_text(text, encoding="utf-8")
    (out / "PERFORMANCE.md.tmp").replace(out / "PERFORMANCE.md")
    return text


def merge(base: Result, part: Result) -> Result:
    """Add a partial run (e.g. `--only engine --device cuda` on a GPU box) under `extra`."""
    if engine := part.figures.engine:
        base.extra[f"engine_{engine.device.split(':')[0]}"] = Extra(run=part.run, figure=engine)
    if figs := part.figures.batching:
        devices = "_".join(sorted({f.device.split(":")[0] for f in figs.values()}))
        base.extra[f"batching_{devices}"] = Extra(run=part.run, figure=figs)
    return base


def engines(result: Result) -> list[tuple[RunInfo | None, EngineFigure]]:
    """This run's engine figure (no separate run) and merged ones, with the run each came from."""
    out: list[tuple[RunInfo | None, EngineFigure]] = []
    if result.figures.engine:
        out.append((None, result.figures.engine))
    return out + [
        (x.run, x.figure) for x in result.extra.values() if isinstance(x.figure, EngineFigure)
    ]


def batching(result: Result) -> dict[str, BatchingFigure]:
    """This run's batching figures plus merged ones (a GPU box's `--only batching` run)."""
    out = dict(result.figures.batching or {})
    for item in result.extra.values():
        if isinstance(item.figure, dict):
            out |= {f"{s}, separate run {item.run.date[:16]}": f for s, f in item.figure.items()}
    return out


def _template(name: str) -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=lambda x: "" if x is None else x,
    )
    env.filters["loadavg"] = lambda v: "/".join(f"{x:.2f}" for x in v) if v else "?"
    return env.get_template(name)


def render(result: Result) -> str:
    text = _template("PERFORMANCE.md.j2").render(
        run=result.run,
        figs=result.figures,
        targets=result.targets or targets(result),
        engines=engines(result),
        batching=batching(result),
    )
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def targets(result: Result) -> list[Target]:
    """Every target this run has figures for, judged; the words come from targets.md.j2."""
    words, figs, out = _template("targets.md.j2").module, result.figures, []

    def judge(text: str, ok: bool | None) -> None:
        fields: dict[str, str] = {}
        key = ""
        for line in str(text).strip().splitlines():
            head, sep, rest = line.partition(": ")
            key, line = (head, rest) if sep and head in Target.model_fields else (key, line)
            fields[key] = f"{fields.get(key, '')} {line}".strip()
        if ok:  # the gap and the why are for a miss (or an n/a)
            fields["gap"] = fields["why"] = ""
        out.append(Target(verdict="n/a" if ok is None else "pass" if ok else "MISS", **fields))

    if sub := figs.submit:
        cpus = result.run.machine["cpus"]
        judge(
            words.submit(sub, cpus, SUBMIT_P99_MS), (sub.top.latency_ms.p99 or 0) <= SUBMIT_P99_MS
        )
    if (ol := figs.openloop) and ol.runs:
        idle = ol.runs[0]
        best = idle.best.rate_per_s if idle.best else 0.0
        judge(words.openloop_rate(idle, OPEN_LOOP_RATE), best >= OPEN_LOOP_RATE)
        cpu = (idle.best or idle.levels[0]).api_cpu_ms_per_submit
        judge(words.openloop_cpu(idle, SUBMIT_CPU_MS), cpu <= SUBMIT_CPU_MS)
    if (pf := figs.peer) and pf.ratio_all_done is not None:
        judge(words.peer_ratio(pf, PEER_RATIO), pf.ratio_all_done >= PEER_RATIO)
        health = pf.ours.health_ms.p99
        judge(words.peer_health(pf, HEALTH_P99_MS), health is not None and health < HEALTH_P99_MS)
    if ov := figs.overhead:
        judge(
            words.overhead(ov, OVERHEAD_MEDIAN_MS),
            (ov.server_overhead_ms.p50 or 0) <= OVERHEAD_MEDIAN_MS,
        )
    if tp := figs.throughput:
        judge(words.throughput(tp, THROUGHPUT_RATIO), min(tp.ratio_per_round) >= THROUGHPUT_RATIO)
    if mem := figs.memory:
        judge(words.api_rss(mem, API_RSS_MB), (mem.api_hwm_mb or 0) <= API_RSS_MB)
        if leak := mem.leak_check:
            judge(words.leak(leak, WORKER_GROWTH_PCT), leak.growth_pct < WORKER_GROWTH_PCT)
    if (bu := figs.burst) and bu.queue_wait_s.max is not None:
        judge(words.burst(bu, BURST_WAIT_S), bu.queue_wait_s.max < BURST_WAIT_S)
    for label, fig in batching(result).items():
        judge(words.batching(label, fig), None)
    gpu_batching = {k: f for k, f in batching(result).items() if f.device.startswith("cuda")}
    for label, fig in gpu_batching.items():
        if (row := fig.pipelined) is not None:
            judge(words.gpu_all_done(label, fig, GPU_ALL_DONE_S), row.wall_s_best < GPU_ALL_DONE_S)
    if not gpu_batching and figs.batching:
        judge(words.gpu_all_done_open(GPU_ALL_DONE_S), None)
    for _run, fig in engines(result):
        if fig.cuda:
            judge(words.gpu_rtf(fig, *GPU_RTF), max(r.rtf_best for r in fig.rows) <= GPU_RTF[1])
    return out
