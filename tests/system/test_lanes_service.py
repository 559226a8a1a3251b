"""Voice notes first, through the real service: two real worker processes (tiny FunASR models)
busy on 300 s recordings, more recordings queued, and a voice note submitted last. With lanes it
is taken as soon as a worker is free, before the recordings queued ahead of it; submitted into
the same lane as them (what the service did before lanes) it waits for all of them.

The voice note's wait in both runs goes to $RELIABILITY_LOG (tests/support/reliability.py), the
figures of report/RELIABILITY.md's "Voice notes behind long recordings" section.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from src.api.main import create_app
from tests.support.audio_samples import SPEECH_WAV
from tests.support.fixtures import Env, result, wait_status
from tests.support.processes import wait_for
from tests.support.reliability import record

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("stop_workers")]


def post(client: TestClient, path: Path, **form: str) -> str:
    with open(path, "rb") as fh:
        resp = client.post("/api/v1/asr/submit", files={"audio": (path.name, fh)}, data=form)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["task_id"])


def run(fenv: Env, long_clip: Path, note_priority: str | None) -> dict[str, object]:
    """2 workers busy on recordings, 2 more recordings queued, then the voice note: who finished
    when (seconds from the voice note's submit), and the order the workers started them in."""
    settings = fenv.settings(lane_high_max_seconds=60, lane_low_min_seconds=600)
    with TestClient(create_app(settings)) as client:
        busy = [post(client, long_clip) for _ in range(2)]
        for task_id in busy:
            wait_for(lambda t=task_id: result(client, t)["attempts"] >= 1, 60, 0.05, "started")
        queued = [post(client, long_clip) for _ in range(2)]
        form = {"priority": note_priority} if note_priority else {}
        submitted = time.monotonic()
        note = post(client, SPEECH_WAV, **form)
        shown = result(client, note)
        bodies = {note: wait_status(client, note, {"done", "failed"}, 180)}
        note_s = time.monotonic() - submitted  # submit to done, as its client sees it
        for task_id in [*queued, *busy]:
            bodies[task_id] = wait_status(client, task_id, {"done", "failed"}, 180)
    assert all(b["status"] == "done" for b in bodies.values()), bodies
    # The records' own times decide the order (ISO-8601 UTC strings sort as times).
    started = sorted(bodies, key=lambda t: bodies[t]["started_at"])
    finished = sorted(bodies, key=lambda t: bodies[t]["finished_at"])
    return {
        "note": note,
        "queued": queued,
        "busy": busy,
        "shown": shown,
        "started": started,
        "finished": finished,
        "note_s": note_s,
    }


def test_a_voice_note_submitted_last_behind_busy_workers_finishes_first(fenv: Env, long_clip: Path):
    conn = fenv.conn()
    for name in ("lane-1", "lane-2"):
        fenv.worker(name).wait_ready(conn)
    with_lanes = run(fenv, long_clip, None)
    note, queued = with_lanes["note"], with_lanes["queued"]
    shown = with_lanes["shown"]
    assert isinstance(shown, dict) and shown["priority"] == "high" and shown["position"] == 1
    started, finished = with_lanes["started"], with_lanes["finished"]
    assert isinstance(started, list) and isinstance(finished, list) and isinstance(queued, list)
    # Taken by the first worker to come free, before both recordings queued ahead of it.
    assert started.index(note) == 2, started
    assert finished.index(note) < min(finished.index(t) for t in queued), finished

    one_lane = run(fenv, long_clip, "normal")
    note, queued = one_lane["note"], one_lane["queued"]
    shown = one_lane["shown"]
    assert isinstance(shown, dict) and shown["priority"] == "normal" and shown["position"] == 3
    started = one_lane["started"]
    assert isinstance(started, list) and isinstance(queued, list)
    assert started.index(note) == 4, started  # first in, last out behind the recordings
    record(
        "a voice note submitted last behind 2 busy workers and 2 queued 300 s recordings",
        with_lanes_s=round(float(with_lanes["note_s"]), 2),  # type: ignore[arg-type]
        one_lane_s=round(float(one_lane["note_s"]), 2),  # type: ignore[arg-type]
        outcome="with lanes the voice note finished before the queued recordings",
    )
