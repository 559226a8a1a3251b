"""The soak (scripts/soak.py): its accounting and its fault schedule, on made-up runs.

The short soak itself, with real processes, is tests/system/test_soak.py.
"""

from __future__ import annotations

from collections import Counter

from scripts.soak import Kill, Plan, RedisFault, schedule, tally


def test_tally_counts_lost_failed_and_twice():
    clips = {t: "note.ogg" for t in ("ok", "twice", "failed", "gone", "stuck", "quiet")}
    results = {
        "ok": {"status": "done", "attempts": 1},
        "twice": {"status": "done", "attempts": 2},
        "failed": {"status": "failed", "error": "The worker stopped (3 times)", "attempts": 3},
        "gone": {"status": "unknown (404)"},
        "stuck": {"status": "processing", "stage": "asr", "attempts": 1},
        "quiet": {"status": "failed", "error": None, "attempts": 1},
    }
    history = {
        "ok": [{"status": "success"}],
        "twice": [{"status": "success"}, {"status": "success"}],
        "failed": [{"status": "failed"}],
        "quiet": [{"status": "success"}],
    }
    completions = Counter({"ok": 1, "twice": 1, "quiet": 2})
    kills = [Kill("kill", "worker-1", 42, "failed", 1.0, collateral=["stuck"])]
    faults = [RedisFault("outage", "SIGTERM", 5.0, processing=["quiet"])]

    got = tally(clips, results, history, completions, kills, faults, {"stuck": ["queued"]})

    out = got["outcomes"]
    assert (out["done"], out["failed"], out["lost"]) == (2, 2, 2)
    assert {t["task_id"] for t in out["lost_tasks"]} == {"gone", "stuck"}
    assert out["failed_unexplained"] == 1
    assert out["failed_reasons"] == {"The worker stopped (3 times)": 1, "(no error text)": 1}
    links = {t["task_id"]: t["link"] for t in out["failed_tasks"] + out["lost_tasks"]}
    assert links["failed"].startswith("killed mid-job")
    assert links["stuck"].startswith("in the batch of a killed worker")
    assert links["quiet"].startswith("running during a Redis outage")
    assert links["gone"] == "not hit by a fault"
    # two history lines, or one line but two completions: both ran twice
    assert {t["task_id"] for t in got["executed_twice"]["tasks"]} == {"twice", "quiet"}
    assert got["records"]["history_status_mismatch"] == ["quiet"]


def test_schedule_has_every_fault_the_plan_asks_for():
    for plan in (Plan(), Plan(jobs=100, kills=5, restarts=1, outages=1, lone_share=0.3)):
        events = schedule(plan)
        kinds = Counter(e.kind for e in events)
        kills = kinds["lone_kill"] + kinds["kill"] + 2 * kinds["kill_both"]
        assert kills == plan.kills and kinds["lone_kill"] >= 1 and kinds["kill_both"] >= 1
        assert kinds["restart"] + kinds["restart_finishing"] == plan.restarts
        assert kinds["outage"] == plan.outages and kinds["switch"] == 1
        assert [e.at_job for e in events] == sorted(e.at_job for e in events)
        assert max(e.at_job for e in events) < plan.jobs
