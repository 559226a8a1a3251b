"""report/PERFORMANCE.md and report/performance.json from one run's figures (plus merged extras).

Targets are judged here, never asserted in tests: a miss is reported with its gap and a one-line
why built from the run's own numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scripts.bench.common import dump_json
from scripts.bench.results import Extra, Result, Target

# The targets for these 2-core machines, and the design's (owner's GPU box) ones.
SUBMIT_P99_MS = 50.0
OVERHEAD_MEDIAN_MS = 30.0
THROUGHPUT_RATIO = 0.9
API_RSS_MB = 150.0
WORKER_GROWTH_PCT = 5.0
BURST_WAIT_S = 60.0
GPU_RTF = (0.01, 0.05)


def write(out: Path, result: Result) -> str:
    """Judge the targets, write performance.json and PERFORMANCE.md; return the Markdown."""
    data = result.model_dump(mode="json", by_alias=True)
    result.targets = [
        Target(**t) for t in sorted(targets(data), key=lambda t: t["name"].split(" ", 1)[0])
    ]
    data = result.model_dump(mode="json", by_alias=True)
    dump_json(out / "performance.json", data)
    text = render(data)
    tmp = out / "PERFORMANCE.md.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out / "PERFORMANCE.md")
    return text


def merge(base: Result, part: Result) -> Result:
    """Add a partial run (e.g. `--only engine --device cuda` on a GPU box) under `extra`."""
    figs = part.figures
    if figs.engine:
        key = f"engine_{figs.engine.device.split(':')[0]}"
        base.extra[key] = Extra(run=part.run, figure=figs.engine)
    if figs.batching:
        devices = sorted({f.device.split(":")[0] for f in figs.batching.values()})
        base.extra[f"batching_{'_'.join(devices)}"] = Extra(run=part.run, figure=figs.batching)
    return base


# --- targets --------------------------------------------------------------------------------------


def _always_faster(fig: dict[str, Any], jobs: int) -> bool:
    """Every round of `jobs` per pass beat every one-by-one round: a gain, not the box's noise."""
    walls = {r["jobs"]: r["wall_s_all"] for r in fig["rows"]}
    return jobs > 1 and max(walls[jobs]) < min(walls[1])


def _row(
    name: str, target: str, measured: str, ok: bool | None, gap: str = "", why: str = ""
) -> dict[str, Any]:
    verdict = "n/a" if ok is None else ("pass" if ok else "MISS")
    return {
        "name": name,
        "target": target,
        "measured": measured,
        "verdict": verdict,
        "gap": gap,
        "why": why,
    }


def _top_level(sub: dict[str, Any]) -> dict[str, Any]:
    return max(sub["levels"], key=lambda r: r["concurrency"])


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    figs = result.get("figures", {})
    rows: list[dict[str, Any]] = []

    sub = figs.get("submit")
    if sub:
        top = _top_level(sub)
        one = min(sub["levels"], key=lambda r: r["concurrency"])
        p99 = top["latency_ms"]["p99"] or 0.0
        c, rps = top["concurrency"], top["requests_per_s"]
        ok = p99 <= SUBMIT_P99_MS
        why = ""
        if not ok:
            why = (
                f"queueing, not per-request cost: {c} clients in a closed loop at {rps} req/s "
                f"spend {c / rps * 1000:.0f} ms each in the system on average (Little's law); "
                f"alone (c={one['concurrency']}) a submit takes {one['latency_ms']['p50']} ms "
                f"(API time {one['server_ms']['p50']} ms: store and check the upload, Redis "
                f"round trips), and within the level the median goes from "
                f"{top.get('p50_first_fifth_ms')} to {top.get('p50_last_fifth_ms')} ms (the "
                f"first fifth includes the ramp-up, when fewer clients are waiting). One uvicorn "
                f"process on {result['run']['machine']['cpus']} shared "
                f"cores; p99 <= {SUBMIT_P99_MS:.0f} ms at {c} concurrent would need "
                f"~{c / (SUBMIT_P99_MS / 1000):.0f} req/s"
            )
        rows.append(
            _row(
                f"1. submit p99 at {c} concurrent",
                f"<= {SUBMIT_P99_MS:.0f} ms (design: < 100 ms)",
                f"{p99:.0f} ms (p50 {top['latency_ms']['p50']:.0f}, {rps} req/s)",
                ok,
                "" if ok else f"+{p99 - SUBMIT_P99_MS:.0f} ms ({p99 / SUBMIT_P99_MS:.1f}x)",
                why,
            )
        )

    ov = figs.get("overhead")
    if ov:
        med = ov["server_overhead_ms"]["p50"]
        parts = ov["parts_ms"]
        ok = med <= OVERHEAD_MEDIAN_MS
        pick = (parts.get("rq_pickup") or {}).get("p50")
        before = (parts.get("api_before_enqueue") or {}).get("p50")
        why = (
            f"not the queue: of the median, {before} ms is the API storing and checking "
            f"the upload before it enqueues (created_at is stamped first), the queue's "
            f"own pick-up is {pick} ms and the job's work outside the recognizer "
            f"{parts['in_job_outside_engine']['p50']} ms"
        )
        rows.append(
            _row(
                "2a. queue overhead median (server: finished-created-engine)",
                f"<= {OVERHEAD_MEDIAN_MS:.0f} ms",
                f"{med} ms (p95 {ov['server_overhead_ms']['p95']}; client-observed median "
                f"{ov['client_overhead_ms']['p50']})",
                ok,
                "" if ok else f"+{med - OVERHEAD_MEDIAN_MS:.1f} ms",
                "" if ok else why,
            )
        )

    tp = figs.get("throughput")
    if tp and "ratio_1_worker" in tp:
        ratio = tp["ratio_1_worker"]
        ok = ratio >= THROUGHPUT_RATIO
        svc, direct = tp["service_1_worker"], tp["direct_loop"]
        extra = svc["wall_s"] - direct["wall_s"]
        why = ""
        if not ok:
            per = tp.get("cpu_s_per_clip") or {}
            why = (
                f"the service took {extra:.1f} s more for {svc['clips']} clips "
                f"({extra / svc['clips'] * 1000:.0f} ms a clip); the engine itself ran "
                f"{svc['engine_s_sum']:.1f} s in the worker vs {direct['engine_s_sum']:.1f} s "
                f"direct. By CPU seconds per clip the worker spends "
                f"{per.get('worker')} s against {per.get('direct')} s direct (RQ bookkeeping, "
                f"progress writes, history, stats, the retention pass) while the API spends "
                f"{per.get('api')} s on the other core storing and decoding the upload; on a "
                f"shared 2-core box those contend with the worker. Round-to-round spread: "
                f"{tp.get('ratio_per_round')}"
            )
        rows.append(
            _row(
                "2b. service throughput / direct loop (1 worker, same threads)",
                f">= {THROUGHPUT_RATIO}",
                f"{ratio} ({svc['clips_per_s']} vs {direct['clips_per_s']} clips/s; by CPU "
                f"seconds per clip {tp.get('cpu_ratio_1_worker')})",
                ok,
                "" if ok else f"-{(THROUGHPUT_RATIO - ratio) * 100:.1f} points",
                why,
            )
        )

    mem = figs.get("memory")
    if mem:
        peak = mem.get("api_hwm_mb") or 0.0
        ok = peak <= API_RSS_MB
        rows.append(
            _row(
                "4a. API RSS (peak over the run)",
                f"<= {API_RSS_MB:.0f} MB",
                f"{peak} MB (idle {mem.get('api_rss_mb_idle')} MB)",
                ok,
                "" if ok else f"+{peak - API_RSS_MB:.0f} MB",
                "" if ok else "see the memory table: peak reached under 100 concurrent uploads",
            )
        )
        leak = mem.get("leak_check")
        if leak:
            growth = leak["growth_pct"]
            ok = growth < WORKER_GROWTH_PCT
            rows.append(
                _row(
                    f"4b. worker RSS growth over {leak['jobs']} jobs",
                    f"< {WORKER_GROWTH_PCT:.0f} %",
                    f"{growth} % ({leak['rss_before_mb']} -> {leak['rss_after_mb']} MB)",
                    ok,
                    "" if ok else f"+{growth - WORKER_GROWTH_PCT:.1f} points",
                    "" if ok else "see the RSS samples: steady slope = leak, early step = caches",
                )
            )

    bu = figs.get("burst")
    if bu and bu["queue_wait_s"]["max"] is not None:
        wait = bu["queue_wait_s"]["max"]
        ok = wait < BURST_WAIT_S
        why = ""
        if not ok:
            why = (
                f"{bu['engine_s_sum']:.0f} s of engine time on {bu['workers']} CPU workers; the "
                f"design's figure is for GPU workers"
            )
        rows.append(
            _row(
                f"5. burst of {bu['clips']}: max queue wait",
                f"< {BURST_WAIT_S:.0f} s (design, owner's GPU box)",
                f"{wait} s (p95 {bu['queue_wait_s']['p95']} s; all done in {bu['all_done_s']} s)",
                ok,
                "" if ok else f"+{wait - BURST_WAIT_S:.0f} s",
                why,
            )
        )

    for size, fig in _batching_figs(result).items():
        faster = [r["jobs"] for r in fig["rows"] if _always_faster(fig, r["jobs"])]
        rows.append(
            _row(
                f"cross-job batching, {size} model on {fig['device_name']}",
                "on by default only where every round beats every one-by-one round",
                ", ".join(f"{r['jobs']} jobs: {r['speedup']}x" for r in fig["rows"][1:]),
                None,
                f"faster in every round at {', '.join(map(str, faster))} jobs"
                if faster
                else "not faster",
                "the full-size row decides the device's default (src/config.py)",
            )
        )

    for _label, fig in _engine_figs(result):
        if not fig["device"].startswith("cuda"):
            continue
        best = [r["rtf_best"] for r in fig["rows"]]
        lo, hi = min(best), max(best)
        ok = hi <= GPU_RTF[1]
        rows.append(
            _row(
                f"3. engine RTF on GPU ({fig['device_name']})",
                f"{GPU_RTF[0]}-{GPU_RTF[1]} (design)",
                f"{lo}-{hi} ({fig['device_name']})",
                ok,
                "" if ok else f"worst {hi / GPU_RTF[1]:.1f}x the upper bound",
                "" if ok else "short clips pay fixed per-call costs; see the engine table",
            )
        )
    return rows


def _batching_figs(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """This run's batching figures plus merged ones (a GPU box's `--only batching` run)."""
    out = dict(result.get("figures", {}).get("batching") or {})
    for key, item in result.get("extra", {}).items():
        if key.startswith("batching"):
            for size, fig in item["figure"].items():
                out[f"{size}, separate run {item['run']['date'][:16]}"] = fig
    return out


def _engine_figs(result: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    if "engine" in result.get("figures", {}):
        out.append(("this run", result["figures"]["engine"]))
    for key, item in result.get("extra", {}).items():
        if key.startswith("engine"):
            run = item["run"]
            m, v = run["machine"], run["versions"]
            commit = (run.get("git") or {}).get("commit") or "?"
            out.append(
                (
                    f"a separate run, {run['date']}, on a {m['cpus']}-CPU {m['cpu_model']} box, "
                    f"torch {v.get('torch')}, funasr {v.get('funasr')}, Python "
                    f"{v.get('python')}, commit {commit[:10]}",
                    item["figure"],
                )
            )
    return out


# --- markdown -------------------------------------------------------------------------------------


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(x: Any) -> str:
        return "" if x is None else str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _s(d: dict[str, Any], *keys: str) -> list[Any]:
    return [d.get(k) for k in keys]


def _header(run: dict[str, Any]) -> str:
    m, v, g = run["machine"], run["versions"], run["git"]
    dirty = " (with uncommitted changes in the tree)" if g.get("dirty") else ""
    return "\n".join(
        [
            f"- **Date**: {run['date']} ({run['mode']} run, {run.get('duration_s', '?')} s)",
            f"- **Command**: `{run['command']}`",
            f"- **Commit**: `{g.get('commit')}` on `{g.get('branch')}`{dirty}",
            f"- **Machine**: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gb']} GB RAM, "
            f"kernel {m['kernel']}; no GPU used for the service figures; load average at start "
            f"{_la(m.get('loadavg_at_start'))}, at end {_la(m.get('loadavg_at_end'))}",
            "- **Versions**: " + ", ".join(f"{k} {val}" for k, val in v.items() if val is not None),
        ]
    )


def _la(values: Any) -> str:
    return "/".join(f"{x:.2f}" for x in values) if values else "?"


def _cpu(fig: dict[str, Any]) -> str:
    cpu = fig.get("cpu") or {}
    return (
        f"other people's processes used {cpu.get('foreign_cores', '?')} cores on average while it "
        f"ran ({fig.get('background_cores_before', '?')} just before)"
    )


def render(result: dict[str, Any]) -> str:
    run, figs = result["run"], result.get("figures", {})
    tg = result.get("targets") or targets(result)
    parts = [
        "# Performance",
        "",
        "Every figure below comes from one run of the benchmark suite "
        "(`uv run python -m scripts.bench.run`; figure modules in `scripts/bench/`); this file and "
        "`report/performance.json` are written by it. GPU engine figures, when present, come from "
        "a separate run on a GPU box and are dated separately.",
        "",
        _header(run),
        "",
        "**What runs**: a private `redis-server` (deploy/redis/redis.conf, AOF on), the API as "
        "production starts it (`python -m uvicorn src.api.main:app --no-access-log`, one process), "
        "and real RQ worker processes (`python -m src.worker`, `ASR_CPU_THREADS` "
        f"{run['config']['threads']} each, `ASR_BATCH_JOBS` 1 so that each job is one "
        "`recognize` call; the batching gain is its own figure). "
        "**The service figures (1, 2, 4, 5) use the tiny, "
        "randomly initialised FunASR models** of `tests/support/tiny_models.py` (SeACo-Paraformer "
        "d=64 + genuine FSMN-VAD + tiny CT-punc) on CPU: they measure the service around the "
        "engine, not the engine. **The engine figure (3) uses a randomly initialised model with "
        "the real Paraformer-zh (SeACo) dimensions**, since the real weights are not on this "
        "machine. This 2-core box is shared with other engineers' test runs; every timed phase "
        "records how many cores other processes used while it ran.",
        "",
        "## Targets",
        "",
        _table(
            ["figure", "target", "measured", "verdict", "gap", "why (when missed)"],
            [[t["name"], t["target"], t["measured"], t["verdict"], t["gap"], t["why"]] for t in tg],
        ),
        "",
    ]
    if "submit" in figs:
        parts += _submit(figs["submit"])
    if "overhead" in figs or "throughput" in figs:
        parts += _queue(figs.get("overhead"), figs.get("throughput"))
    engines = _engine_figs(result)
    if engines:
        parts += _engine(engines)
    batching_figs = _batching_figs(result)
    if batching_figs:
        parts += _batching(batching_figs)
    if "memory" in figs:
        parts += _memory(figs["memory"])
        parts += _design_memory(figs["memory"], engines)
    if "burst" in figs:
        parts += _burst(figs["burst"])
    parts += _findings(figs, engines)
    return "\n".join(parts).rstrip() + "\n"


def _submit(sub: dict[str, Any]) -> list[str]:
    rows = []
    for r in sub["levels"]:
        lat, srv = r["latency_ms"], r["server_ms"]
        rows.append(
            [
                r["concurrency"],
                r["requests"],
                r["errors"],
                r["requests_per_s"],
                *_s(lat, "p50", "p95", "p99", "max"),
                *_s(srv, "p50", "p95", "p99"),
                f"{r.get('p50_first_fifth_ms')} -> {r.get('p50_last_fifth_ms')}",
                (r["cpu"] or {}).get("foreign_cores"),
            ]
        )
    scans = [
        f"{s['ms_per_call']} ms with {s['recordings_indexed']} recordings"
        for s in sub["retention_scan"]
    ]
    keyscans = [
        f"{s['ready_workers_scan_ms']} ms with {s['redis_keys']} keys"
        for s in sub["retention_scan"]
        if "ready_workers_scan_ms" in s
    ]
    return [
        "## 1. Submit latency",
        "",
        f"Clip: a 10 s OGG/Opus voice note ({sub['clip']['bytes']} bytes, the committed speech "
        "fixture looped, 48 kHz, 24 kbit/s). Each level is a closed loop: N clients, each "
        "submitting back to back after warm-up requests; the queue is emptied between levels. No "
        'worker runs during this figure (the design\'s latency is "not counting transcription"; '
        "figure 5 has submit latency while workers transcribe). Client = httpx, request sent to "
        "response read; API = the app's own time from its access log (`ms=`).",
        "",
        _table(
            [
                "clients",
                "requests",
                "errors",
                "req/s",
                "client p50 ms",
                "p95",
                "p99",
                "max",
                "API p50 ms",
                "API p95",
                "API p99",
                "p50 first -> last fifth",
                "other load (cores)",
            ],
            rows,
        ),
        "",
        f"Retention pass that every submit runs (`recordings.enforce_retention`), timed against "
        f"the backlog each level left: {'; '.join(scans)}. The worker-readiness read that every "
        f"submit (for estimated_wait) and /health run (`job_queue.ready_workers`: the "
        f"`asr:workers` index and an MGET of the beacons): {'; '.join(keyscans)}. "
        f"API RSS after this figure: {sub['api_rss_mb_after']} MB.",
        "",
        _upload_check_text(sub["upload_check"]),
        "",
    ]


def _upload_check_text(chk: dict[str, Any]) -> str:
    runs = chk.get("submit_runs", "decode")
    verify = ""
    if "verify_ms" in chk:
        verify = f", `verify` (the same checks; Ogg pages read, not decoded) {chk['verify_ms']} ms"
    return (
        f"What checking one such upload costs (in the driver process, median): `probe` "
        f"{chk['probe_ms']} ms, the full `decode` (+ resample to 16 kHz float) "
        f"{chk['full_decode_ms']} ms{verify}, the codec alone {chk['codec_only_decode_ms']} ms. "
        f"In the tree measured, submit runs `{runs}` on uploads up to 4 MB."
    )


def _queue(ov: dict[str, Any] | None, tp: dict[str, Any] | None) -> list[str]:
    out = ["## 2. Queue overhead and service throughput", ""]
    if ov:
        p = ov["parts_ms"]
        rows = [
            [
                "server overhead (finished - created - engine)",
                *_s(ov["server_overhead_ms"], "p50", "p95", "max"),
            ],
            [
                "client overhead (done seen - sent - engine)",
                *_s(ov["client_overhead_ms"], "p50", "p95", "max"),
            ],
            ["  submit response (client)", *_s(p["submit_response"], "p50", "p95", "max")],
            ["  queue wait (started - created)", *_s(p["queue_wait"], "p50", "p95", "max")],
            [
                "  in job, outside the recognizer",
                *_s(p["in_job_outside_engine"], "p50", "p95", "max"),
            ],
            [
                "queue wait, part: created -> RQ enqueued (API stores and checks the upload)",
                *_s(p.get("api_before_enqueue") or {}, "p50", "p95", "max"),
            ],
            [
                "queue wait, part: RQ enqueued -> RQ started (the queue itself)",
                *_s(p.get("rq_pickup") or {}, "p50", "p95", "max"),
            ],
            [
                "queue wait, part: RQ started -> task started_at",
                *_s(p.get("job_start") or {}, "p50", "p95", "max"),
            ],
            [
                "after finished_at until RQ ended (history, stats, retention; in neither figure)",
                *_s(p.get("after_finished") or {}, "p50", "p95", "max"),
            ],
            [
                "recognizer's own time (processing_time)",
                *_s(ov["processing_ms"], "p50", "p95", "max"),
            ],
        ]
        out += [
            f"**Overhead per job**: {ov['jobs']} jobs of the 10 s voice note, one at a time "
            f"(no job waits behind another), 2 idle workers, the client polling `/result` every "
            f"{ov['poll_interval_ms']:.0f} ms. {_cpu(ov)}.",
            "",
            _table(["ms", "median", "p95", "max"], rows),
            "",
        ]
    if tp:
        rows = []

        def add(label: str, f: dict[str, Any]) -> None:
            cpu = f.get("process_cpu_s") or {}
            own = cpu.get("workers", cpu.get("direct"))
            rows.append(
                [
                    label,
                    f["clips"],
                    f["audio_s"],
                    f["wall_s"],
                    f["clips_per_s"],
                    f["audio_s_per_s"],
                    f["engine_s_sum"],
                    own,
                    cpu.get("api"),
                    (f["cpu"] or {}).get("foreign_cores"),
                ]
            )

        if tp.get("service_n_workers"):
            add(f"service {tp['service_n_workers']['workers']} workers", tp["service_n_workers"])
        for k, pair in enumerate(tp.get("rounds") or [], 1):
            add(f"service 1 worker, round {k}", pair["service"])
            add(f"direct loop, round {k}", pair["direct"])
        if not tp.get("rounds"):
            add("service 1 worker", tp["service_1_worker"])
            add("direct loop", tp["direct_loop"])
        ratios = ", ".join(
            f"{k.removeprefix('ratio_').replace('_', ' ')}: **{v}**"
            for k, v in tp.items()
            if k.startswith("ratio_") and k != "ratio_per_round" and v is not None
        )
        per_clip = tp.get("cpu_s_per_clip") or {}
        out += [
            f"**Throughput**: the same {len(tp['clip_lengths_s'])} voice notes "
            f"({min(tp['clip_lengths_s'])}-{max(tp['clip_lengths_s'])} s, seeded, "
            f"{tp['direct_loop']['audio_s']} s of audio) through the service (uploads 10 in "
            f"flight; first submit to last finished_at) and through "
            f"`SpeechRecognizer.recognize(path)` in a loop in one process (after one warm-up "
            f"call), same model, {tp['threads_per_process']} torch thread(s) per process, same "
            f"run; 1 worker and the direct loop alternate, and each path's best round is "
            f"compared. CPU s = CPU seconds the worker(s) (or the direct-loop process) and the "
            f"API used during the phase.",
            "",
            _table(
                [
                    "path",
                    "clips",
                    "audio s",
                    "wall s",
                    "clips/s",
                    "audio s/s",
                    "engine s (sum)",
                    "CPU s, worker(s)/direct",
                    "CPU s, API",
                    "other load (cores)",
                ],
                rows,
            ),
            "",
            f"Service / direct loop (best rounds): {ratios}; per round (1 worker): "
            f"{tp.get('ratio_per_round')}. CPU seconds per clip: worker {per_clip.get('worker')}, "
            f"direct loop {per_clip.get('direct')} (ratio direct/worker "
            f"**{tp.get('cpu_ratio_1_worker')}**, a throughput ratio that other people's load "
            f"cannot skew), plus API {per_clip.get('api')} and Redis {per_clip.get('redis')} on "
            f"the other core. 2 workers use both cores and the direct loop one: that ratio shows "
            f"scaling; the 1-worker one is like for like.",
            "",
        ]
    return out


def _engine(engines: list[tuple[str, dict[str, Any]]]) -> list[str]:
    out = ["## 3. Engine speed (RTF)", ""]
    for label, fig in engines:
        model = fig["model"]
        if not model["random_weights"]:
            weights = "real weights"
        elif model["size"] == "full":
            weights = (
                "**randomly initialised, with the real Paraformer-zh (SeACo) dimensions** (the "
                "real weights are not on this machine)"
            )
        else:
            weights = "the tiny random test model (a smoke run: not the real architecture's speed)"
        rows = [
            [
                r["clip_s"],
                r["batch_size_s"],
                r["rtf_best"],
                r["rtf_median"],
                r.get("decode_s", r.get("pre_asr_s")),
                r.get("vad_s"),
                r["asr_s"],
                r["post_asr_s"],
                r["chars_per_audio_s"],
                r["segments"],
            ]
            for r in fig["rows"]
        ]
        out += [
            f"**{fig['device_name']}** ({fig['device']}, {fig['torch_threads']} torch "
            f"thread{'s' if fig['torch_threads'] != 1 else ''}; "
            f"{label}). ASR model: {model['size']} ({model['asr_params_m']} M parameters, "
            f"model.pt {model['asr_model_pt_mb']} MB), {weights}; genuine FSMN-VAD; tiny "
            f"CT-punc. Load {fig['load_s']} s; process RSS after load "
            f"{fig['process_rss_mb_after_load']} MB{_gpu_text(fig)}. Clips: the voice note "
            f"looped (OGG/Opus), "
            f"decode included. Stage split of the best run: decode (PyAV, CPU) / VAD / ASR / "
            f"punctuation. "
            f"{_cpu(fig)}.",
            "",
            _table(
                [
                    "clip s",
                    "batch_size_s",
                    "RTF best",
                    "RTF median",
                    "decode s",
                    "VAD s",
                    "ASR s",
                    "punc s",
                    "chars per audio s",
                    "VAD segments",
                ],
                rows,
            ),
            "",
        ]
    out += [
        "A random model's CIF predictor decides how many tokens each segment gets, so the "
        "decoder's work differs from a trained model's (a trained Mandarin model emits about "
        "4-5 characters per second of speech; compare the column above). The encoder, 50 SANM "
        "blocks, does the same work whatever the weights.",
        "",
    ]
    return out


def _batching(figs: dict[str, dict[str, Any]]) -> list[str]:
    lines = [
        "## Cross-job batching",
        "",
        "The same Telegram-like clips (seeded, 5-30 s OGG/Opus) through "
        "`SpeechRecognizer.recognize` one by one, as a worker without batching runs them, and "
        "through `recognize_batch` in groups of N jobs, as a worker with `ASR_BATCH_JOBS=N` "
        "runs them: every clip's VAD segments decoded in shared, length-sorted ASR batches, then "
        "FunASR's own merge, punctuation and sentence split per clip. Wall time is the best of "
        "the rounds (modes alternate each round); `same text` counts clips whose text equals the "
        "one-by-one transcript, `identical` those whose sentence times are equal too (a sentence "
        "edge can move by one 20 ms frame).",
        "",
    ]
    for size, fig in figs.items():
        rows = [
            [
                r["jobs"],
                r["wall_s_best"],
                ", ".join(str(x) for x in r["wall_s_all"]),
                r["clips_per_s"],
                r["rtf"],
                f"{r['speedup']}x",
                f"{r.get('same_text', '?')}/{len(fig['clip_lengths_s'])}",
                f"{r['identical']}/{len(fig['clip_lengths_s'])}",
            ]
            for r in fig["rows"]
        ]
        lines += [
            f"**{size} model ({fig['asr_params_m']} M params) on {fig['device_name']}, "
            f"{fig['torch_threads']} torch thread(s)**: {len(fig['clip_lengths_s'])} clips, "
            f"{fig['audio_s']} s of audio; {_cpu(fig)}.",
            "",
            _table(
                [
                    "jobs per pass",
                    "best s",
                    "all s",
                    "clips/s",
                    "RTF",
                    "vs one by one",
                    "same text",
                    "identical",
                ],
                rows,
            ),
            "",
        ]
    return lines


def _design_memory(mem: dict[str, Any], engines: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The design's 'about 3 GB (model + Redis)', from the full-size engine process."""
    redis_mb = (mem.get("redis_end") or {}).get("used_memory_mb")
    lines = []
    for _label, fig in engines:
        if fig["model"]["size"] != "full":
            continue
        gpu = ""
        if fig.get("gpu_peak_allocated_mb") is not None:
            gpu = f" plus {fig['gpu_peak_allocated_mb']} MB of GPU memory at peak"
        trimmed = ""
        if fig.get("rss_mb_after_trim") is not None:
            trimmed = f" ({fig['rss_mb_after_trim']} MB after `malloc_trim(0)`, as workers do)"
        lines.append(
            f"{fig['process_rss_mb_after_load']} MB RSS on {fig['device_name']}{trimmed}{gpu}"
        )
    if not lines:
        return []
    return [
        f'Design figure "about 3 GB (model + Redis)": one process with the full-size model: '
        f"{'; '.join(lines)}; Redis {redis_mb} MB at the end of this run. A worker holds one "
        f"such model, so 2 workers need about twice that.",
        "",
    ]


def _gpu_text(fig: dict[str, Any]) -> str:
    if fig.get("gpu_mb_after_load") is None:
        return ""
    return (
        f"; GPU memory: {fig['gpu_mb_after_load']} MB allocated after load, peak "
        f"{fig.get('gpu_peak_allocated_mb')} MB over the grid, {fig.get('gpu_reserved_mb')} MB "
        f"reserved by the allocator"
    )


def _memory(mem: dict[str, Any]) -> list[str]:
    rows = [
        ["API, idle after start", mem.get("api_rss_mb_idle")],
        ["API, after figure 1 (100 concurrent uploads)", mem.get("api_rss_mb_after_submit")],
        ["API, after the burst", mem.get("api_rss_mb_after_burst")],
        ["API, at the end", mem.get("api_rss_mb_end")],
        ["API, peak (VmHWM)", mem.get("api_hwm_mb")],
    ]
    for name, value in (mem.get("worker_rss_mb_after_load") or {}).items():
        rows.append([f"{name}, after model load (tiny model)", value])
    if mem.get("direct_process_rss_mb_after_load") is not None:
        rows.append(
            ["direct-loop process, after the same load", mem["direct_process_rss_mb_after_load"]]
        )
    leak = mem.get("leak_check")
    if leak:
        rows += [
            [f"{leak['worker']}, before the {leak['jobs']}-job leak check", leak["rss_before_mb"]],
            [f"{leak['worker']}, after it", leak["rss_after_mb"]],
            [f"{leak['worker']}, peak (VmHWM)", leak["hwm_mb"]],
        ]
    redis_rows = []
    for label, key in (
        ("start", "redis_start"),
        ("after the burst", "redis_after_burst"),
        ("end", "redis_end"),
    ):
        r = mem.get(key)
        if r:
            redis_rows.append(
                [
                    label,
                    r["used_memory_mb"],
                    r["used_memory_peak_mb"],
                    r["used_memory_rss_mb"],
                    r["keys"],
                ]
            )
    out = [
        "## 4. Memory",
        "",
        "RSS from `/proc/<pid>/status` (VmRSS; VmHWM = peak).",
        "",
        _table(["process", "RSS MB"], rows),
        "",
    ]
    if leak:
        samples = ", ".join(
            f"{s['jobs']}: {s['rss_mb']}"
            for s in leak["samples"][:: max(1, len(leak["samples"]) // 12)]
        )
        out += [
            f"Leak check: {leak['jobs']} jobs of the 6.6 s fixture on {leak['worker']} (which had "
            f"already served the earlier figures' jobs), in waves of 8; growth "
            f"**{leak['growth_mb']} MB = {leak['growth_pct']} %**, of which "
            f"{leak['second_half_growth_mb']} MB in the second half. RSS (MB) by jobs done: "
            f"{samples}.",
            "",
        ]
    out += [
        "Redis (`INFO memory`):",
        "",
        _table(["when", "used_memory MB", "peak MB", "RSS MB", "keys"], redis_rows),
        "",
        "Worker RSS here is for the tiny model; the full-size model's process RSS is in figure 3.",
        "",
    ]
    return out


def _burst(bu: dict[str, Any]) -> list[str]:
    qw, sl = bu["queue_wait_s"], bu["submit_latency_ms"]
    return [
        "## 5. Burst",
        "",
        f"{bu['clips']} voice notes of {bu['lengths_s']['min']}-{bu['lengths_s']['max']} s "
        f"(seed {bu['lengths_s']['seed']}, {bu['lengths_s']['sum']} s of audio) submitted at once, "
        f"one connection each, {bu['workers']} CPU workers with the tiny model. {_cpu(bu)}.",
        "",
        _table(
            ["", "value"],
            [
                ["accepted / rejected", f"{bu['accepted']} / {bu['rejected']}"],
                ["done / failed", f"{bu['done']} / {bu['failed']}"],
                ["all uploads answered after", f"{bu['all_submitted_s']} s"],
                ["all done after", f"{bu['all_done_s']} s"],
                ["queue wait max / p95 / median", f"{qw['max']} / {qw['p95']} / {qw['p50']} s"],
                [
                    "submit latency p50 / p95 / p99 / max",
                    f"{sl['p50']} / {sl['p95']} / {sl['p99']} / {sl['max']} ms",
                ],
                ["engine time, sum", f"{bu['engine_s_sum']} s"],
                [
                    "jobs per worker",
                    ", ".join(f"{k}: {v}" for k, v in sorted(bu["jobs_per_worker"].items())),
                ],
                ["Redis used memory after", f"{bu['redis_used_memory_mb_after']} MB"],
            ],
        ),
        "",
        "Queue wait is started_at - created_at. These are tiny models on 2 CPU cores, not the "
        "owner's GPU box: the wait scales with the engine time per job (figure 3 gives the real "
        "architecture's RTF).",
        "",
    ]


def _findings(figs: dict[str, Any], engines: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Observations about src/ backed by this run's numbers."""
    out = ["## Findings", ""]
    sub = figs.get("submit")
    if sub and sub["retention_scan"]:
        big = max(sub["retention_scan"], key=lambda s: s["recordings_indexed"])
        small = min(sub["retention_scan"], key=lambda s: s["recordings_indexed"])
        out.append(
            f"- **Retention and readiness reads stay flat as the backlog grows.** The retention "
            f"pass every submit and every job runs (`recordings.enforce_retention`) skips the "
            f"recordings of queued and running tasks with one SMISMEMBER on `asr:audio:pinned` "
            f"and reads task records only for files it deletes: {small['ms_per_call']} ms with "
            f"{small['recordings_indexed']} recordings indexed, {big['ms_per_call']} ms with "
            f"{big['recordings_indexed']} (the previous run, which loaded every surplus record, "
            f"took 84 ms at 320)."
            + (
                f" Ready workers come from the `asr:workers` index plus an MGET of their beacons "
                f"(`job_queue.ready_workers`): {small['ready_workers_scan_ms']} ms with "
                f"{small['redis_keys']} keys in Redis, {big['ready_workers_scan_ms']} ms with "
                f"{big['redis_keys']}."
                if "ready_workers_scan_ms" in big
                else ""
            )
        )
    chk = (sub or {}).get("upload_check") or {}
    if sub and chk.get("submit_runs") == "verify" and "verify_ms" in chk:
        one = min(sub["levels"], key=lambda r: r["concurrency"])
        out.append(
            f"- **Upload check**: the submit path runs `verify` (`src/media/audio.py`), which for "
            f"Ogg reads the CRC-checked pages and decodes only the first packets: "
            f"{chk['verify_ms']} ms for the 10 s OGG/Opus voice note, against "
            f"{chk['full_decode_ms']} ms for a full `decode` ({chk['probe_ms']} ms for the "
            f"probe alone), out of an API time of {one['server_ms']['p50']} ms per submit "
            f"(c={one['concurrency']}). Other formats are decoded without resampling."
        )
    elif sub and chk:
        one = min(sub["levels"], key=lambda r: r["concurrency"])
        out.append(
            f"- **The submit path decodes every upload in full** (`src/service/tasks.py` `submit`, "
            f"`FULL_CHECK_MAX_BYTES` = 4 MB: `decode()` after `probe()`), including the resample "
            f"to 16 kHz float that only the worker needs: {chk['full_decode_ms']} ms for the 10 s "
            f"voice note against {chk['probe_ms']} ms for the probe and "
            f"{chk['codec_only_decode_ms']} ms for running the codec alone, out of an API time of "
            f"{one['server_ms']['p50']} ms per submit (c={one['concurrency']}). It is the largest "
            f"part of the API's per-request CPU, so it sets the req/s ceiling of figure 1 and most "
            f"of the overhead of figure 2 (created_at is stamped before it). Fix: check integrity "
            f"by decoding packets without resampling (or only probe, and let the worker's decode "
            f"report damage as it already does)."
        )
    mem = figs.get("memory") or {}
    if mem.get("worker_ready_s"):
        ready = max(mem["worker_ready_s"].values())
        out.append(
            f"- **A worker needs {ready} s from start to ready** here, almost all of it "
            f"`import funasr` ({mem.get('child_import_s')} s in the engine process started at the "
            f"same time): FunASR's `__init__` imports every model module (sklearn, transformers, "
            f"torch.distributed...). Not a bug in src/, but it is the restart time after a crash "
            f"under `scripts/start_workers.sh`/systemd, and /health says 503 meanwhile."
        )
    bu = figs.get("burst")
    if bu and bu["submit_latency_ms"]["max"] is not None:
        sl = bu["submit_latency_ms"]
        out.append(
            f"- **Under a burst, uploads wait seconds for their task id**: {bu['clips']} voice "
            f"notes at once, with the workers transcribing, got their submit answer after "
            f"{sl['p50'] / 1000:.1f} s (median) and up to {sl['max'] / 1000:.1f} s (figure 5). "
            f"Each submit is CPU work in one uvicorn process (mostly the upload check) sharing "
            f"2 cores with the workers."
            + (
                " A client with a 10 s HTTP timeout would see failures."
                if sl["max"] > 10_000
                else " Under a 10 s client timeout here, but it grows with the burst's size."
            )
            + " A second uvicorn worker process (`--workers 2`) would help on a box with "
            "cores to spare."
        )
    for _label, fig in engines:
        before, after = fig.get("rss_mb_before_trim"), fig.get("rss_mb_after_trim")
        if before is None or after is None or before - after < 100:
            continue
        out.append(
            f"- **Loading leaves ~{(before - after) / 1024:.1f} GB of freed heap**, which "
            f"workers now hand back ({fig['device_name']}, full-size model): the engine "
            f"process's RSS was {before} MB after the RTF grid and {after} MB right after "
            f"glibc's `malloc_trim(0)` (model.pt is {fig['model']['asr_model_pt_mb']} MB). "
            f"FunASR builds the model and loads the state dict on the CPU, and the freed copies "
            f"stay in the heap; `src/worker/process.py` calls `malloc_trim(0)` after loading "
            f"(`release_freed_heap`, which logs RSS before and after)."
        )
    for _label, fig in engines:
        if not fig["device"].startswith("cuda"):
            continue
        longest = max(fig["rows"], key=lambda r: (r["clip_s"], -r["rtf_best"]))
        if longest.get("decode_s") is None or longest.get("vad_s") is None:
            continue
        total = longest["decode_s"] + longest["vad_s"] + longest["asr_s"] + longest["post_asr_s"]
        share = (longest["decode_s"] + longest["vad_s"]) / total * 100
        out.append(
            f"- **On the GPU the ASR model is not the bottleneck** ({fig['device_name']}): for "
            f"the {longest['clip_s']} s clip the PyAV decode on the CPU took "
            f"{longest['decode_s']} s and FSMN-VAD {longest['vad_s']} s against "
            f"{longest['asr_s']} s for the Paraformer batches and {longest['post_asr_s']} s for "
            f"punctuation, so decode + VAD are {share:.0f} % of the recognizer's time "
            f"(`src/asr/recognizer.py` `_recognize`: decode, then one `generate`). The design's "
            f"GPU RTF target is met; the next speed-up is there (e.g. decode the next job while "
            f"the GPU runs the current one), not in batch_size_s, which changes little."
        )
    if not out[2:]:
        out.append("- none in this run")
    out.append("")
    return out
