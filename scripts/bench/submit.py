"""Figure 1: submit latency and requests/s, up to 100 concurrent clients uploading a voice note.

No worker runs (the design's figure is "not counting transcription"); each level starts from an
empty queue. Also timed: the retention pass and the worker-readiness read that every submit runs,
against the backlog each level leaves, and what checking one upload costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from scripts.bench.client import Upload, closed_loop, server_submit_ms
from scripts.bench.common import log, phase, rss_mb
from scripts.bench.results import Clip, RetentionScan, Stats, SubmitFigure, SubmitLevel, UploadCheck
from scripts.bench.stack import Stack


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls, in ms."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(sorted(times)[len(times) // 2], 2)


def retention_scan(stack: Stack, repeats: int = 5) -> RetentionScan:
    """Time the API's per-submit retention pass and readiness read against the current backlog."""
    from src.config import Settings
    from src.queue import job_queue
    from src.uploads import recordings

    assert stack.redis_server is not None
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_host="127.0.0.1",
        redis_port=stack.redis_server.port,
        storage_path=stack.storage,
        max_recordings=10,
    )
    conn = stack.conn()
    return RetentionScan(
        recordings_indexed=conn.zcard(recordings.AUDIO_INDEX_KEY),
        ms_per_call=median_ms(lambda: recordings.enforce_retention(conn, settings), repeats),
        redis_keys=conn.dbsize(),
        ready_workers_scan_ms=median_ms(lambda: job_queue.ready_workers(conn), repeats),
    )


def upload_check(clip: Path, repeats: int = 7) -> UploadCheck:
    """What the submit path spends checking one upload, in this process: `probe`, the full
    `decode` (+ resample to 16 kHz float), `verify` where the tree has it, and the codec alone."""
    import av

    from src.media import audio
    from src.service import tasks

    def codec_only() -> None:
        with av.open(str(clip)) as container:
            for packet in container.demux(container.streams.audio[0]):
                packet.decode()

    verify = getattr(audio, "verify", None)
    source = Path(tasks.__file__).read_text(encoding="utf-8")
    return UploadCheck(
        submit_runs="verify" if "verify(" in source else "decode",
        probe_ms=median_ms(lambda: audio.probe(clip), repeats),
        full_decode_ms=median_ms(lambda: audio.decode(clip), repeats),
        codec_only_decode_ms=median_ms(codec_only, repeats),
        verify_ms=median_ms(lambda: verify(clip), repeats) if verify else None,
    )


def level(
    stack: Stack, upload: Upload, concurrency: int, per_client: int, quiet_s: float
) -> SubmitLevel:
    """One closed loop: `concurrency` clients, each submitting `per_client` times back to back."""
    assert stack.api is not None
    api_log = stack.storage / "logs" / "asr_api.log"
    offset = api_log.stat().st_size if api_log.exists() else 0
    warmup = min(concurrency, 20)
    with phase(stack.pids(), quiet_s) as measured:
        results, wall = asyncio.run(
            closed_loop(stack.api.url, [upload], concurrency, per_client, warmup=warmup)
        )
    ok = sorted((r for r in results if r.status == 200), key=lambda r: r.started)
    # The API's log sink writes from a queue: wait until every timed request is in.
    deadline = time.monotonic() + 10
    server_ms = server_submit_ms(api_log, offset)
    while len(server_ms) < warmup + len(ok) and time.monotonic() < deadline:
        time.sleep(0.2)
        server_ms = server_submit_ms(api_log, offset)
    # Latency drift within the level: the backlog (and the retention scan) grows with it.
    fifth = max(1, len(ok) // 5)
    errors = [r for r in results if r.status != 200]
    return SubmitLevel(
        concurrency=concurrency,
        requests=len(results),
        errors=len(errors),
        error_samples=sorted({f"{r.status} {r.error}"[:120] for r in errors})[:3],
        wall_s=round(wall, 3),
        requests_per_s=round(len(results) / wall, 1),
        latency_ms=Stats.of([r.latency for r in ok], 1000),
        server_ms=Stats.of(server_ms[warmup:]),
        p50_first_fifth_ms=Stats.of([r.latency for r in ok[:fifth]], 1000).p50,
        p50_last_fifth_ms=Stats.of([r.latency for r in ok[-fifth:]], 1000).p50,
        **dict(measured),
    )


def run(stack: Stack, clip: Path, levels: list[tuple[int, int]], quiet_s: float) -> SubmitFigure:
    assert stack.api is not None
    upload = Upload.of(clip)
    rows: list[SubmitLevel] = []
    scans: list[RetentionScan] = []
    for concurrency, per_client in levels:
        stack.reset_queue_state()
        if not rows:
            scans.append(retention_scan(stack))
        row = level(stack, upload, concurrency, per_client, quiet_s)
        rows.append(row)
        scans.append(retention_scan(stack))  # the backlog this level left (no worker runs)
        lat = row.latency_ms
        log(
            f"submit c={concurrency}: {row.requests_per_s} req/s, p50 {lat.p50} ms, "
            f"p95 {lat.p95} ms, p99 {lat.p99} ms, errors {row.errors}"
        )
    api_rss = rss_mb(stack.api.pid)
    stack.reset_queue_state()
    check = upload_check(clip)
    log(f"upload check in the submit path: {check}")
    return SubmitFigure(
        upload_check=check,
        clip=Clip(file=clip.name, seconds=10, bytes=upload.audio_bytes, codec="opus"),
        levels=rows,
        retention_scan=scans,
        api_rss_mb_after=api_rss,
    )
