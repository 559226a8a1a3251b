"""Figure 1b: the arrival rate the API sustains while each voice note is still answered fast.

Closed loops only measure queueing (N clients wait for each answer before sending again). Here
requests arrive as a Poisson process at a fixed rate, each sent at its scheduled time whatever
the earlier ones are doing, and its latency counts from that time: a stalled server cannot hide
behind a client that waited (no coordinated omission). Each rate runs for a fixed time; the API's
CPU seconds divided by the submits answered is what one submit costs.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np

from scripts.bench import client, results
from scripts.bench.client import SUBMIT, Upload
from scripts.bench.common import log, phase, proc_cpu_seconds
from scripts.bench.results import OpenLoopRun, RateLevel
from scripts.bench.stack import Stack

# A rate whose p99 is this far over the target ends the sweep: higher rates only queue more.
GIVE_UP_P99_MS = 1000.0
CONNECTIONS = 64


def arrivals(rate: float, seconds: float, seed: int) -> list[float]:
    """Send times (s from the start) of a Poisson process of `rate` per second, reproducible."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 20))
    return [float(t) for t in times[times < seconds]]


async def _offer(
    url: str, upload: Upload, times: list[float]
) -> list[tuple[float, float, int, str]]:
    """(latency s from the scheduled time, the client's own lag before it sent, status, error)
    per arrival."""
    limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as http:
        # Open the connections first, so the first arrivals do not pay for the handshakes.
        await asyncio.gather(*(http.get("/api/v1/asr/queue/status") for _ in range(16)))
        start = time.perf_counter() + 0.1

        async def one(at: float) -> tuple[float, float, int, str]:
            due = start + at
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            lag = time.perf_counter() - due
            try:
                resp = await http.post(SUBMIT, content=upload.body, headers=upload.headers)
            except httpx.HTTPError as exc:
                return time.perf_counter() - due, lag, 0, type(exc).__name__
            error = "" if resp.status_code == 200 else resp.text[:120]
            return time.perf_counter() - due, lag, resp.status_code, error

        return list(await asyncio.gather(*(one(t) for t in times)))


def level(
    stack: Stack, upload: Upload, rate: float, seconds: float, seed: int, quiet_s: float
) -> RateLevel:
    assert stack.api is not None and stack.redis_server is not None
    api_pids, redis_pid = stack.api_pids(), stack.redis_pid()
    times = arrivals(rate, seconds, seed)
    api_log = stack.storage / "logs" / "asr_api.log"
    offset = api_log.stat().st_size if api_log.exists() else 0
    with phase(stack.pids(), quiet_s) as measured:
        api0, redis0 = sum(map(proc_cpu_seconds, api_pids)), proc_cpu_seconds(redis_pid)
        own0 = time.process_time()
        t0 = time.perf_counter()
        replies = asyncio.run(_offer(stack.api.url, upload, times))
        wall = time.perf_counter() - t0
        api_s = sum(map(proc_cpu_seconds, api_pids)) - api0
        redis_s, own_s = proc_cpu_seconds(redis_pid) - redis0, time.process_time() - own0
    ok = [lat for lat, _, status, _ in replies if status == 200]
    bad = [f"{status} {error}" for _, _, status, error in replies if status != 200]
    # The API's own time per request, from its access log (written from a queue: wait for it).
    deadline, server = time.monotonic() + 10, client.server_submit_ms(api_log, offset)
    while len(server) < len(replies) and time.monotonic() < deadline:
        time.sleep(0.2)
        server = client.server_submit_ms(api_log, offset)
    per = 1000.0 / max(1, len(replies))
    row = RateLevel(
        rate_per_s=rate,
        seconds=seconds,
        sent=len(replies),
        answered=len(ok),
        errors=len(bad),
        error_samples=sorted(set(bad))[:3],
        achieved_per_s=round(len(ok) / max(wall, 1e-6), 1),
        latency_ms=results.Stats.of(ok, 1000),
        server_ms=results.Stats.of(server),
        client_lag_ms=results.Stats.of([lag for _, lag, _, _ in replies], 1000),
        api_cpu_ms_per_submit=round(api_s * per, 2),
        redis_cpu_ms_per_submit=round(redis_s * per, 2),
        client_cpu_ms_per_submit=round(own_s * per, 2),
        **dict(measured),
    )
    log(
        f"open loop {rate:g}/s: p50 {row.latency_ms.p50} p99 {row.latency_ms.p99} ms "
        f"(API's own p99 {row.server_ms.p99}, client lag p99 {row.client_lag_ms.p99}), "
        f"errors {row.errors}, API {row.api_cpu_ms_per_submit} ms CPU/submit"
    )
    return row


def figure(stack: Stack, upload: Upload, cfg: results.Config, workers: int) -> OpenLoopRun:
    """One sweep; with `workers` > 0 they transcribe the arrivals meanwhile (always busy: the
    notes arrive faster than they finish), and the queue is dropped between rates instead of
    flushed, so the workers' own keys stay."""
    rows: list[RateLevel] = []
    seed = cfg.seeds["openloop"]
    for i, rate in enumerate(cfg.openloop_rates):
        _empty(stack, workers)
        rows.append(level(stack, upload, rate, cfg.openloop_seconds, seed + i, cfg.quiet_s))
        if rows[-1].errors or rows[-1].p99 > GIVE_UP_P99_MS:
            break
    _empty(stack, workers)
    return OpenLoopRun(workers_busy=workers, api_processes=len(stack.api_pids()), levels=rows)


def _empty(stack: Stack, workers: int) -> None:
    if workers:
        stack.drop_queued()
    else:
        stack.reset_queue_state()
