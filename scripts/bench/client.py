"""HTTP clients (httpx.AsyncClient) and completion tracking for the service figures.

Uploads are pre-encoded multipart bodies (built once per clip), so the 100 simulated clients spend
as little CPU as possible on this shared 2-core box. Completion is read from the task records in
Redis (one MGET per poll) and every time that matters is a server timestamp (created_at,
started_at, finished_at) or the recognizer's own processing_time, never a poll's arrival.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from scripts.bench.common import parse_ts

SUBMIT = "/api/v1/asr/submit"


@dataclass(frozen=True)
class Upload:
    """A pre-encoded multipart request body for one clip."""

    name: str
    body: bytes
    headers: dict[str, str]
    audio_bytes: int

    @classmethod
    def of(cls, path: Path, language: str = "zh") -> Upload:
        data, b = path.read_bytes(), "bench" + secrets.token_hex(12)
        ctype = "audio/ogg" if path.suffix == ".ogg" else "application/octet-stream"
        disposition = "Content-Disposition: form-data; name="
        head = f'--{b}\r\n{disposition}"language"\r\n\r\n{language}\r\n--{b}\r\n'
        head += f'{disposition}"audio"; filename="{path.name}"\r\nContent-Type: {ctype}\r\n\r\n'
        body = head.encode() + data + f"\r\n--{b}--\r\n".encode()
        return cls(
            path.name, body, {"content-type": f"multipart/form-data; boundary={b}"}, len(data)
        )


@dataclass
class Submitted:
    """One submit as the client saw it."""

    started: float  # epoch seconds, client clock (same host as the server)
    latency: float  # seconds
    status: int
    task_id: str | None = None
    error: str | None = None


async def submit_one(client: httpx.AsyncClient, upload: Upload) -> Submitted:
    started, t0 = time.time(), time.perf_counter()
    try:
        resp = await client.post(SUBMIT, content=upload.body, headers=upload.headers)
    except httpx.HTTPError as exc:
        return Submitted(started, time.perf_counter() - t0, 0, error=type(exc).__name__)
    latency, ok = time.perf_counter() - t0, resp.status_code == 200
    task_id, error = (resp.json()["task_id"], None) if ok else (None, resp.text[:200])
    return Submitted(started, latency, resp.status_code, task_id, error)


def submit_all(
    base_url: str, uploads: list[Upload], clients: int, warmup: int = 0
) -> tuple[list[Submitted], float]:
    """`clients` clients submit the uploads back to back, each taking the next one left, all
    released together (after `warmup` requests that open the connections): a closed loop, a
    burst (one client per upload) or a bounded pipeline. The timed submits and the wall time."""

    async def main() -> tuple[list[Submitted], float]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(base_url=base_url, timeout=120.0, limits=limits) as http:
            warm = (submit_one(http, uploads[i % len(uploads)]) for i in range(warmup))
            await asyncio.gather(*warm)
            left, gate = iter(uploads), asyncio.Event()
            done: list[Submitted] = []

            async def one_client() -> None:
                await gate.wait()
                for upload in left:  # shared: each upload is sent once
                    done.append(await submit_one(http, upload))

            tasks = [asyncio.create_task(one_client()) for _ in range(clients)]
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            gate.set()
            await asyncio.gather(*tasks)
            return done, time.perf_counter() - t0

    return asyncio.run(main())


@dataclass
class Finished:
    """A finished task as its record says (epoch seconds)."""

    task_id: str
    status: str
    created: float
    started: float | None
    finished: float | None
    processing: float | None
    duration: float | None
    worker: str | None
    record: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def queue_wait(self) -> float | None:
        return None if self.started is None else self.started - self.created

    @classmethod
    def of(cls, task_id: str, raw: bytes) -> Finished:
        rec = json.loads(raw)
        return cls(
            task_id=task_id,
            status=rec["status"],
            created=parse_ts(rec["created_at"]) or 0.0,
            started=parse_ts(rec.get("started_at")),
            finished=parse_ts(rec.get("finished_at")),
            processing=rec.get("processing_time"),
            duration=rec.get("duration") or rec.get("audio_duration"),
            worker=rec.get("worker_id"),
            record=rec,
        )


def wait_all(
    conn: redis.Redis, task_ids: list[str], timeout: float, interval: float = 0.1
) -> dict[str, Finished]:
    """Poll the task records until every task is done or failed (or `timeout` passes)."""
    pending = list(task_ids)
    done: dict[str, Finished] = {}
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        still = []
        for start in range(0, len(pending), 200):
            chunk = pending[start : start + 200]
            raws = conn.mget([f"asr:task:{t}" for t in chunk])
            for task_id, raw in zip(chunk, raws, strict=True):
                if raw is None:
                    continue  # deleted: nothing to wait for
                if json.loads(raw)["status"] in ("done", "failed"):
                    done[task_id] = Finished.of(task_id, raw)
                else:
                    still.append(task_id)
        pending = still
        if pending:
            time.sleep(interval)
    return done


def record_of(conn: redis.Redis, task_id: str) -> Finished | None:
    raw = conn.get(f"asr:task:{task_id}")
    return Finished.of(task_id, raw) if raw else None


_ACCESS_MS = re.compile(r"POST /api/v1/asr/submit .*http=200 ms=([\d.]+)")


def server_submit_ms(api_log: Path, offset: int) -> list[float]:
    """The API's own time per accepted submit (its access-log `ms=`), from byte `offset` on."""
    if not api_log.exists():
        return []
    with api_log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode("utf-8", "replace")
    return [float(m.group(1)) for m in _ACCESS_MS.finditer(text)]
