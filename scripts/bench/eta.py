"""How good is `estimated_wait` under a backlog? Submit a burst of voice notes, then compare each
task's estimate with when it actually finished.

    uv run --frozen --no-sync python -m scripts.bench.eta [--jobs 150] [--workers 2]

The real service (private redis-server, uvicorn, the worker supervisor, tiny models; the soak's
Stack) first finishes a few warm-up notes, so both estimates have observed jobs to go on. Then
the burst: for each submit it keeps the answer's estimate (worker seconds per recent job, a
batched pass counted once) and, from the same moment, the previous formula (mean processing
time per finished job, which counts a whole batched pass for every job in it). Prints one JSON
object and writes it to --out (default report/eta.json).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from scripts.bench.client import SUBMIT, Upload, wait_all
from scripts.bench.common import ROOT, machine_info
from scripts.bench.stack import voice_note
from scripts.soak import Stack
from src.results import stats
from tests.support.audio_samples import SPEECH_WAV, make_long


def ratios(pairs: list[tuple[float, float]]) -> dict[str, float]:
    """Estimate / actual, over tasks that waited at least 2 s (shorter ones are all noise)."""
    values = sorted(est / act for est, act in pairs if act >= 2)
    at = {"median": statistics.median(values), "p10": values[len(values) // 10]}
    at["p90"] = values[len(values) * 9 // 10]
    return {k: round(v, 2) for k, v in at.items()} | {"n": len(values)}


def run(jobs: int, workers: int, base: Path, warm_long: int) -> dict[str, Any]:
    stack = Stack(base)
    try:
        stack.start(workers)
        note = Upload.of(voice_note(15, base / "clips"))
        conn = stack.conn()
        with httpx.Client(base_url=stack.api.url, timeout=30) as client:

            def submit(upload: Upload) -> dict[str, Any]:
                resp = client.post(SUBMIT, content=upload.body, headers=upload.headers)
                return resp.raise_for_status().json()

            warm = [submit(note)["task_id"] for _ in range(8)]
            if warm_long:  # a history that holds long recordings too, as a real one does
                long_clip = Upload.of(make_long(SPEECH_WAV, base / "clips", seconds=300))
                warm += [submit(long_clip)["task_id"] for _ in range(warm_long)]
            wait_all(conn, warm, 120)
            rows: list[dict[str, Any]] = []
            for _ in range(jobs):
                values = stats.read(conn)
                old_per_job = values.get("processing_seconds", 0.0) / max(values["done"], 1)
                sent, body = time.time(), submit(note)
                rows.append(
                    {
                        "task_id": body["task_id"],
                        "sent": sent,
                        "position": body["position"],
                        "estimate": body["estimated_wait"],
                        "old_estimate": math.ceil((body["position"] or 1) * old_per_job / workers),
                    }
                )
        finished = wait_all(conn, [r["task_id"] for r in rows], 900, 0.2)
        for row in rows:
            row["actual"] = round(
                (finished[row["task_id"]].finished or time.time()) - row["sent"], 2
            )
        deepest = max(rows, key=lambda r: r["position"] or 0)
        return {
            "date": datetime.now().isoformat(timespec="minutes"),
            "machine": machine_info(),
            "jobs": jobs,
            "workers": workers,
            "clip": "15 s OGG/Opus voice note",
            "warm_up": f"8 voice notes and {warm_long} 300 s clips",
            "estimate_over_actual": ratios([(r["estimate"], r["actual"]) for r in rows]),
            "old_estimate_over_actual": ratios([(r["old_estimate"], r["actual"]) for r in rows]),
            "deepest": {k: deepest[k] for k in ("position", "estimate", "old_estimate", "actual")},
        }
    finally:
        stack.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=150)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warm-long", type=int, default=0, help="300 s clips in the warm-up")
    parser.add_argument("--out", type=Path, default=ROOT / "report" / "eta.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="asr-eta-") as tmp:
        result = run(args.jobs, args.workers, Path(tmp), args.warm_long)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
