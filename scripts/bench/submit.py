"""Figure 1: submit latency (p50/p95/p99) and requests/s, up to 100 concurrent clients uploading a
10 s OGG/Opus voice note. Runs with no worker started, so the API has the CPU to itself (the
design's figure is "not counting transcription"); the burst figure gives submit latency while
workers transcribe.

Each concurrency level starts from an empty queue. Reported per level: client-observed latency
(httpx, includes the client's own event loop) and the API's in-app time from its access log.
Also: the cost of `recordings.enforce_retention`, which every submit (and every finished job)
runs, against the backlog this phase leaves behind.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from scripts.bench.client import Upload, closed_loop, server_submit_ms
from scripts.bench.common import CpuWatch, log, rss_mb, summary, wait_quiet
from scripts.bench.stack import Stack


def retention_scan_ms(stack: Stack, repeats: int = 5) -> dict[str, Any]:
    """Time the API's per-submit retention pass against the current backlog (in this process)."""
    from src.config import Settings
    from src.queue import job_queue
    from src.uploads import recordings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_host="127.0.0.1",
        redis_port=stack.redis_server.port if stack.redis_server else 6379,
        storage_path=stack.storage,
        max_recordings=10,
    )
    conn = stack.conn()
    backlog = conn.zcard(recordings.AUDIO_INDEX_KEY)
    times = []
    scans = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        recordings.enforce_retention(conn, settings)
        times.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        job_queue.ready_workers(conn)  # submit (estimated_wait) and /health run it
        scans.append((time.perf_counter() - t0) * 1000)
    return {
        "recordings_indexed": backlog,
        "ms_per_call": round(sorted(times)[len(times) // 2], 2),
        "redis_keys": conn.dbsize(),
        "ready_workers_scan_ms": round(sorted(scans)[len(scans) // 2], 2),
    }


def upload_check_ms(clip: Path, repeats: int = 7) -> dict[str, Any]:
    """What the submit path spends on checking one upload, in this process (median of repeats):
    `probe`, the full `decode` (+ resample to 16 kHz float), `verify` where the tree has it (the
    same checks without resampling), and the codec alone. `submit_runs` says which of them
    `src/service/submit.py` calls on uploads up to 4 MB in the tree being measured."""
    import av

    from src.media import audio
    from src.service import submit as tasks

    def packets_only() -> None:
        with av.open(str(clip)) as container:
            stream = container.streams.audio[0]
            for packet in container.demux(stream):
                packet.decode()

    def med(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
        return round(sorted(times)[len(times) // 2], 2)

    source = Path(tasks.__file__).read_text(encoding="utf-8")
    out: dict[str, Any] = {
        "submit_runs": "verify" if "verify(" in source else "decode",
        "probe_ms": med(lambda: audio.probe(clip)),
        "full_decode_ms": med(lambda: audio.decode(clip)),
        "codec_only_decode_ms": med(packets_only),
    }
    verify = getattr(audio, "verify", None)
    if verify is not None:
        out["verify_ms"] = med(lambda: verify(clip))
    return out


def run(stack: Stack, clip: Path, levels: list[tuple[int, int]], quiet_s: float) -> dict[str, Any]:
    assert stack.api is not None
    upload = Upload.of(clip)
    api_log = stack.storage / "logs" / "asr_api.log"
    rows = []
    scans = []
    for concurrency, per_client in levels:
        stack.reset_queue_state()
        if concurrency == levels[0][0]:
            scans.append(retention_scan_ms(stack))
        background = wait_quiet(stack.pids(), quiet_s)
        offset = api_log.stat().st_size if api_log.exists() else 0
        warmup = min(concurrency, 20)
        watch = CpuWatch(stack.pids())
        results, wall = asyncio.run(
            closed_loop(stack.api.url, [upload], concurrency, per_client, warmup=warmup)
        )
        cpu = watch.stop()
        # The API's log sink writes from a queue: wait until every timed request is in.
        ok_count = warmup + sum(1 for r in results if r.status == 200)
        deadline = time.monotonic() + 10
        server_ms, _ = server_submit_ms(api_log, offset)
        while len(server_ms) < ok_count and time.monotonic() < deadline:
            time.sleep(0.2)
            server_ms, _ = server_submit_ms(api_log, offset)
        server_ms = server_ms[warmup:]
        ok = [r.latency for r in results if r.status == 200]
        # Latency drift within the level: the backlog (and the retention scan) grows with it.
        by_start = sorted((r for r in results if r.status == 200), key=lambda r: r.started)
        fifth = max(1, len(by_start) // 5)
        first = summary([r.latency for r in by_start[:fifth]], 1000)["p50"]
        last = summary([r.latency for r in by_start[-fifth:]], 1000)["p50"]
        errors = [r for r in results if r.status != 200]
        row = {
            "concurrency": concurrency,
            "requests": len(results),
            "errors": len(errors),
            "error_samples": sorted({f"{r.status} {r.error}"[:120] for r in errors})[:3],
            "wall_s": round(wall, 3),
            "requests_per_s": round(len(results) / wall, 1),
            "latency_ms": summary(ok, 1000),
            "server_ms": summary(server_ms, 1.0),
            "p50_first_fifth_ms": first,
            "p50_last_fifth_ms": last,
            "background_cores_before": background,
            "cpu": cpu,
        }
        # The backlog this level left (every submit queued a job; no worker is running).
        scans.append(retention_scan_ms(stack))
        rows.append(row)
        lat = row["latency_ms"]
        log(
            f"submit c={concurrency}: {row['requests_per_s']} req/s, p50 {lat['p50']} ms, "
            f"p95 {lat['p95']} ms, p99 {lat['p99']} ms, errors {len(errors)}"
        )
    api_rss = rss_mb(stack.api.pid)
    stack.reset_queue_state()
    check = upload_check_ms(clip)
    log(f"upload check in the submit path: {check}")
    return {
        "upload_check": check,
        "clip": {"file": clip.name, "seconds": 10, "bytes": upload.audio_bytes, "codec": "opus"},
        "workers_running": 0,
        "levels": rows,
        "retention_scan": scans,
        "api_rss_mb_after": api_rss,
    }
