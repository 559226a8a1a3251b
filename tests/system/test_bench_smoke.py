"""The benchmark suite's smoke run, so scripts/bench cannot rot.

`python -m scripts.bench.run --smoke` starts its own redis-server, uvicorn API, one worker and the
engine process on the tiny models, runs every figure at a few requests/jobs each and writes
PERFORMANCE.md + performance.json. Timings are not asserted (this is a shared CI box); the test
checks that every figure was produced, complete and consistent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_bench_smoke_writes_every_figure(tmp_path: Path):
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "scripts.bench.run", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-5000:]
    data = json.loads((out / "performance.json").read_text(encoding="utf-8"))
    run, figs = data["run"], data["figures"]

    assert run["mode"] == "smoke"
    for key in ("date", "machine", "versions", "git", "command", "duration_s"):
        assert key in run
    assert run["machine"]["cpus"] >= 1
    assert run["versions"]["funasr"] and run["versions"]["rq"]
    assert set(figs) == {
        "submit",
        "openloop",
        "peer",
        "overhead",
        "throughput",
        "engine",
        "batching",
        "memory",
        "burst",
    }

    for level in figs["submit"]["levels"]:
        assert level["errors"] == 0
        assert level["latency_ms"]["p99"] is not None and level["requests_per_s"] > 0
        assert level["server_ms"]["n"] == level["requests"]  # every submit in the access log
    assert figs["submit"]["upload_check"]["full_decode_ms"] > 0
    assert all("ready_workers_scan_ms" in s for s in figs["submit"]["retention_scan"])

    runs = figs["openloop"]["runs"]
    assert [r["workers_busy"] for r in runs] == [0, 1]
    for r in runs:
        assert [lv["rate_per_s"] for lv in r["levels"]] == [20, 40]
        for lv in r["levels"]:
            assert lv["errors"] == 0 and lv["answered"] == lv["sent"] > 0
            assert lv["latency_ms"]["p99"] is not None and lv["api_cpu_ms_per_submit"] > 0
            assert lv["server_ms"]["n"] == lv["sent"]  # every submit in the access log

    peer = figs["peer"]
    for side in (peer["ours"], peer["peer"]):
        assert side["done"] == peer["clips"] == 6 and side["errors"] == 0
        assert side["health_ms"]["n"] > 0 and side["wall_s_all_done"] > 0
    assert peer["ratio_all_done"] > 0
    # The judged peer runs our pipeline; the ASR-only one only in a full run (CI time).
    assert peer["peer_pipeline"] == "same" and run["config"]["peer_pipeline"] == "same"
    assert peer["peer_asr_only"] is None and peer["ratio_all_done_asr_only"] is None

    ov = figs["overhead"]
    assert ov["jobs"] >= 1 and ov["server_overhead_ms"]["p50"] is not None
    assert ov["client_overhead_ms"]["p95"] is not None
    assert ov["parts_ms"]["rq_pickup"]["p50"] is not None  # RQ's own timestamps were read

    tp = figs["throughput"]
    assert tp["service_1_worker"]["clips"] == tp["direct_loop"]["clips"] >= 1
    assert tp["ratio_1_worker"] > 0 and tp["cpu_ratio_1_worker"] > 0
    assert len(tp["rounds"]) >= 1

    eng = figs["engine"]
    assert eng["rows"] and all(r["rtf_best"] > 0 for r in eng["rows"])
    assert {r["batch_size_s"] for r in eng["rows"]} == {60, 300}

    bat = figs["batching"]["tiny"]
    # One by one, batches of 4, and a pipelined pass: PIPELINE_WAVES (4) waves of 2 = 8 jobs.
    assert [(r["jobs"], r["wave"]) for r in bat["rows"]] == [(1, 0), (4, 0), (8, 2)]
    assert all(r["wall_s_best"] > 0 and r["speedup"] > 0 for r in bat["rows"])
    # Same clips, same text: batching must not change what a clip decodes to (a sentence edge
    # may move by one 20 ms frame, so `identical` is reported, not asserted).
    assert all(r["same_text"] == len(bat["clip_lengths_s"]) for r in bat["rows"])

    mem = figs["memory"]
    assert mem["api_rss_mb_idle"] > 0 and mem["api_hwm_mb"] >= mem["api_rss_mb_idle"]
    assert all(v and v > 0 for v in mem["worker_rss_mb_after_load"].values())
    assert mem["leak_check"]["jobs"] >= 1 and mem["leak_check"]["rss_after_mb"] > 0
    assert mem["redis_end"]["used_memory_mb"] > 0

    bu = figs["burst"]
    assert bu["done"] == bu["clips"] and bu["failed"] == 0 and bu["rejected"] == 0
    assert bu["queue_wait_s"]["max"] is not None and bu["all_done_s"] > 0

    names = {t["name"].split(".")[0] for t in data["targets"]}
    assert {"1", "2a", "2b", "4a", "4b", "5"} <= names
    assert all(t["verdict"] in ("pass", "MISS", "n/a") for t in data["targets"])

    md = (out / "PERFORMANCE.md").read_text(encoding="utf-8")
    for heading in (
        "## Targets",
        "## 1. Submit latency",
        "## 2. Queue overhead and service throughput",
        "## 3. Engine speed (RTF)",
        "## Cross-job batching",
        "## 4. Memory",
        "## 5. Burst",
    ):
        assert heading in md
