"""100 concurrent clients against a real uvicorn server, two real workers, a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.audio_samples import SPEECH_OGG
from tests.support.fixtures import Service
from tests.support.processes import ApiProcess, service_env

pytestmark = pytest.mark.slow

CLIENTS = 100


@pytest.fixture(scope="module")
def server(service: Service, model_dirs: object) -> Iterator[str]:
    models = {"asr": model_dirs.asr, "vad": model_dirs.vad, "punc": model_dirs.punc}  # type: ignore[attr-defined]
    env = service_env(service.redis_server.port, service.storage, models, LOG_LEVEL="INFO")
    api = ApiProcess(env, service.storage / "uvicorn.out").start("/api/v1/health")
    try:
        yield api.url
    finally:
        api.stop()


async def burst(url: str) -> tuple[list[httpx.Response], list[float], list[dict]]:
    payload = SPEECH_OGG.read_bytes()
    # Close idle connections before uvicorn does (its keep-alive is 5 s): reusing one the server
    # is closing at that moment is a client-side race that ends in ReadError.
    limits = httpx.Limits(max_connections=CLIENTS + 10, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        health_times: list[float] = []
        stop = asyncio.Event()

        async def probe_health() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                resp = await client.get("/api/v1/health")
                health_times.append(time.perf_counter() - started)
                assert resp.status_code == 200
                await asyncio.sleep(0.05)

        async def one(i: int) -> httpx.Response:
            return await client.post(
                "/api/v1/asr/submit", files={"audio": (f"note-{i}.ogg", payload, "audio/ogg")}
            )

        prober = asyncio.create_task(probe_health())
        responses = await asyncio.gather(*(one(i) for i in range(CLIENTS)))
        ids = [r.json()["task_id"] for r in responses if r.status_code == 200]

        results: dict[str, dict] = {}
        deadline = time.monotonic() + 300
        while len(results) < len(ids) and time.monotonic() < deadline:
            pending = [t for t in ids if t not in results]
            bodies = await asyncio.gather(*(client.get(f"/api/v1/asr/result/{t}") for t in pending))
            for task_id, resp in zip(pending, bodies, strict=True):
                body = resp.json()
                assert body["status"] in ("queued", "processing", "done", "failed")
                if body["status"] in ("done", "failed"):
                    results[task_id] = body
            await asyncio.sleep(0.2)
        stop.set()
        await prober
        return list(responses), health_times, list(results.values())


def test_one_hundred_concurrent_clients(server: str, service: Service):
    started = time.monotonic()
    responses, health_times, results = asyncio.run(burst(server))
    elapsed = time.monotonic() - started

    assert [r.status_code for r in responses] == [200] * CLIENTS
    ids = [r.json()["task_id"] for r in responses]
    assert len(set(ids)) == CLIENTS
    assert len(results) == CLIENTS
    assert {r["status"] for r in results} == {"done"}

    lines = [json.loads(x) for x in service.settings.history_file.read_text().splitlines()]
    ours = [x for x in lines if x["task_id"] in set(ids)]
    assert sorted(x["task_id"] for x in ours) == sorted(ids)  # exactly one line per task
    conn = service.redis_server.client()
    latest = [json.loads(x)["task_id"] for x in conn.lrange("asr:history:latest", 0, -1)]
    assert len(latest) == service.settings.max_history_records and set(latest) <= set(ids)
    assert conn.zcard("asr:audio:index") == service.settings.max_recordings
    assert len(list(service.settings.recordings_dir.iterdir())) == service.settings.max_recordings

    p95 = (
        statistics.quantiles(health_times, n=20)[18]
        if len(health_times) >= 20
        else max(health_times)
    )
    assert max(health_times) < 5  # a hang detector; the figures go to the report
    log = os.environ.get("RELIABILITY_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "fault": f"{CLIENTS} concurrent clients submit one voice note each",
                        "recovery_s": round(elapsed, 1),
                        "health_p95_ms": round(p95 * 1000, 1),
                        "health_max_ms": round(max(health_times) * 1000, 1),
                        "outcome": f"{CLIENTS}x200, all done, unique ids, one JSONL line each",
                    }
                )
                + "\n"
            )
