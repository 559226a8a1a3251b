"""Schemathesis against the app's own /openapi.json, through the ASGI app, on a real Redis.

Schemathesis' engine (what `schemathesis run` drives) runs its examples, coverage (boundaries,
missing and wrong-typed values, unsupported methods) and fuzzing phases over every operation, with
valid and invalid data, derandomized and bounded. Every response must not be a 5xx, must carry a
status code and content type the operation documents, and must match the schema documented for
that code. A task with the id the docs use as their example (its recording an MP4, which is served
as video/mp4) and a ready worker are seeded first, so the 200 bodies of result, audio, retry,
delete and health are checked, not only the errors; a real upload checks submit's 200.

(`schemathesis.pytest.from_fixture` would give one test per operation, but schemathesis 4.32
reads `request.node._nodeid`, which pytest 9 no longer has, so the engine is driven directly.)
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from rq import Queue
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure
from schemathesis.engine import Status, events, from_schema
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from src.api.main import create_app
from src.config import Settings
from src.queue import job_queue
from src.records import task_store
from src.records.task_store import TaskRecord, utcnow
from src.uploads import recordings
from tests.support.audio_samples import SPEECH_WAV, make_format

EXAMPLE_ID = "2025-12-01_001_0a1b2c3d4e5f60718293a4b5"  # the id /docs shows for {task_id}
MAX_EXAMPLES = 50
CHECK_NAMES = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
]
CONFIG = f"""
seed = 20251201

[generation]
max-examples = {MAX_EXAMPLES}
deterministic = true
mode = "all"

[phases.stateful]
enabled = false  # no links between operations: it only repeats the 404/422s

[checks]
enabled = false
{"".join(f"[checks.{name}]{chr(10)}enabled = true{chr(10)}" for name in CHECK_NAMES)}
"""
OPERATIONS = {
    "POST /api/v1/asr/submit",
    "GET /api/v1/asr/result/{task_id}",
    "GET /api/v1/asr/history",
    "GET /api/v1/asr/audio/{task_id}",
    "GET /api/v1/asr/queue/status",
    "POST /api/v1/asr/retry/{task_id}",
    "DELETE /api/v1/asr/task/{task_id}",
    "GET /api/v1/health",
    "GET /api/v1/stats",
    "POST /v1/audio/transcriptions",
    "GET /v1/models",
    "GET /v1/models/{model}",
}


def seed_state(conn: redis.Redis, settings: Settings, work: Path) -> None:
    """A queued task with the example id (an MP4 recording), and one ready worker."""
    recordings.ensure_dirs(settings)
    source = make_format("mp4_video", SPEECH_WAV, work)
    name = f"{EXAMPLE_ID}.mp4"
    (settings.recordings_dir / name).write_bytes(source.read_bytes())
    now = utcnow()
    record = TaskRecord(
        task_id=EXAMPLE_ID,
        filename="voice.mp4",
        file=name,
        size=source.stat().st_size,
        format="mp4",
        audio_duration=6.6,
        created_at=now,
    )
    task_store.save(conn, record)
    recordings.index_recording(conn, name, now.timestamp())
    job_queue.enqueue_task(Queue(settings.rq_queue_name, connection=conn), EXAMPLE_ID, settings)
    beacon = {"name": "worker-1", "device": "cpu", "model_loaded": True, "current_task": None}
    job_queue.publish_readiness(conn, "worker-1", json.dumps(beacon), 600)


@pytest.fixture
def api_schema(
    settings: Settings, conn: redis.Redis, tmp_path: Path
) -> Iterator[schemathesis.BaseSchema]:
    seed_state(conn, settings, tmp_path)
    config = schemathesis.Config.from_str(CONFIG)
    # Loading starts the app's lifespan (Redis connection, logging); it is stopped at teardown.
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(settings), config=config)
    shutdown_lifespans()


def run_engine(schema: schemathesis.BaseSchema) -> dict[str, Any]:
    calls: Counter[str] = Counter()
    codes: defaultdict[str, Counter[int]] = defaultdict(Counter)
    failures: list[str] = []
    errors: list[str] = []
    finished = None
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            rec = event.recorder
            for interaction in rec.interactions.values():
                calls[rec.label] += 1
                if interaction.response is not None:
                    codes[rec.label][interaction.response.status_code] += 1
            for case_id, checks in rec.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        failure: Failure | None = check.failure_info and check.failure_info.failure
                        title = failure.title if failure else "?"
                        case = rec.cases[case_id].value if case_id in rec.cases else None
                        where = f"{case.method} {case.formatted_path}" if case else rec.label
                        failures.append(f"{rec.label}: {check.name}: {title} ({where})")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            errors.append(repr(event))
        elif isinstance(event, events.EngineFinished):
            finished = event
    assert finished is not None
    return {
        "calls": calls,
        "codes": codes,
        "failures": sorted(set(failures)),
        "errors": errors,
        "stop": finished.stop_reason,
        "seconds": finished.running_time,
    }


def test_every_documented_error_is_the_error_shape(api_schema: schemathesis.BaseSchema):
    """FastAPI documents 422 as `{"detail": [...]}` unless told otherwise; ours is `{"error"}`,
    and OpenAI's error object on the OpenAI-compatible /v1 routes."""
    spec = api_schema.raw_schema
    for path, ops in spec["paths"].items():
        shape = "/OpenAIErrorResponse" if path.startswith("/v1/") else "/ErrorResponse"
        for method, op in ops.items():
            for code, response in op["responses"].items():
                if code.startswith(("4", "5")) and path != "/api/v1/health":
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref.endswith(shape), (method, path, code, ref)


def test_api_matches_its_schema(
    api_schema: schemathesis.BaseSchema, record_property: Callable[[str, object], None]
):
    result = run_engine(api_schema)
    summary = "\n".join(
        f"{op}: {result['calls'][op]} calls {dict(sorted(result['codes'][op].items()))}"
        for op in sorted(result["calls"])
    )
    total = sum(result["calls"].values())
    record_property("schemathesis", f"{total} calls in {result['seconds']:.1f}s\n{summary}")
    assert result["errors"] == []
    assert result["failures"] == [], "\n".join(result["failures"])
    assert str(result["stop"]) == "completed"
    assert set(result["calls"]) == OPERATIONS, summary
    assert all(n >= 10 for n in result["calls"].values()), summary
    assert all(code < 500 or code == 503 for c in result["codes"].values() for code in c), summary
    # The seeded task reached the success paths.
    for op in ("GET /api/v1/asr/result/{task_id}", "GET /api/v1/asr/audio/{task_id}"):
        assert result["codes"][op][200] >= 1, summary
    assert result["codes"]["GET /api/v1/health"][200] >= 1, summary


def test_a_real_upload_matches_the_submit_schema(api_schema: schemathesis.BaseSchema):
    """Generated bytes are never audio; one real upload checks submit's 200 body."""
    operation = api_schema["/api/v1/asr/submit"]["POST"]
    case = operation.Case(
        body={"audio": SPEECH_WAV.read_bytes(), "language": "zh", "batch_size": 300},
        media_type="multipart/form-data",
    )
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    response = case.call_and_validate(checks=checks)
    assert response.status_code == 200, response.text
