"""The soak's short version for real (scripts/soak.py --short).

It starts Redis, uvicorn and the real worker supervisor, pushes 100 jobs through them while it
SIGKILLs busy workers (one of them the only worker), restarts Redis once and takes it away once,
then checks what a client would see: nothing lost, nothing run twice, and a reason for every
failure.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_short_soak_loses_nothing_and_runs_nothing_twice(tmp_path: Path):
    run = subprocess.run(
        [sys.executable, "-m", "scripts.soak", "--short", "--out", str(tmp_path), "--clean"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=560,
    )
    report = tmp_path / "soak.json"
    assert report.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(report.read_text())
    out, kills, redis_faults = summary["outcomes"], summary["kills"], summary["redis"]
    detail = json.dumps({k: summary[k] for k in ("outcomes", "executed_twice")}, indent=1)
    assert summary["submissions"]["accepted"] == 100
    assert kills["count"] == 5 and kills["by_kind"].get("lone_kill", 0) >= 1
    assert redis_faults["restarts"] == 1 and redis_faults["outages"] == 1
    assert out["lost"] == 0, detail
    assert summary["executed_twice"]["count"] == 0, detail
    assert out["failed_unexplained"] == 0, detail
    assert out["done"] + out["failed"] == 100
    assert kills["not_restarted"] == 0, kills["records"]
    assert run.returncode == 0, run.stdout[-3000:]
