"""The service figures, measured on the running Stack: 1 submit latency, 2a queue overhead,
2b throughput against the direct loop, 4 memory (with a leak check) and 5 a burst.

What each measures, and why so, is told beside its table in PERFORMANCE.md.j2. Every time that
matters is a server timestamp (created_at, started_at, finished_at, RQ's own) or the
recognizer's processing_time, never a poll's arrival.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from scripts.bench import client, results
from scripts.bench.common import CpuWatch, hwm_mb, log, phase, proc_cpu_seconds, rss_mb
from scripts.bench.stack import Child, Stack


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls, in ms."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(sorted(times)[len(times) // 2], 2)


# --- 1. submit ------------------------------------------------------------------------------------


def retention_scan(stack: Stack, repeats: int = 5) -> results.RetentionScan:
    """The per-submit retention pass and worker-readiness read, timed against today's backlog."""
    from src.config import Settings
    from src.queue import job_queue
    from src.uploads import recordings

    conn, port = stack.conn(), stack.redis_server.port if stack.redis_server else 0
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        redis_host="127.0.0.1",
        redis_port=port,
        storage_path=stack.storage,
        max_recordings=10,  # as the Stack runs the service
    )
    return results.RetentionScan(
        recordings_indexed=conn.zcard(recordings.AUDIO_INDEX_KEY),
        ms_per_call=median_ms(lambda: recordings.enforce_retention(conn, settings), repeats),
        redis_keys=conn.dbsize(),
        ready_workers_scan_ms=median_ms(lambda: job_queue.ready_workers(conn), repeats),
    )


def upload_check(clip: Path, repeats: int = 7) -> results.UploadCheck:
    """What checking one upload costs in this process: probe, full decode, verify, the codec."""
    import av

    import src.service
    from src.media import audio

    def codec_only() -> None:
        with av.open(str(clip)) as container:
            for packet in container.demux(container.streams.audio[0]):
                packet.decode()

    verify = getattr(audio, "verify", None)
    # which check the submit path calls, in the tree being measured
    service_code = "".join(p.read_text() for p in Path(src.service.__file__).parent.glob("*.py"))
    return results.UploadCheck(
        submit_runs="verify" if "verify(" in service_code else "decode",
        probe_ms=median_ms(lambda: audio.probe(clip), repeats),
        full_decode_ms=median_ms(lambda: audio.decode(clip), repeats),
        codec_only_decode_ms=median_ms(codec_only, repeats),
        verify_ms=median_ms(lambda: verify(clip), repeats) if verify else None,
    )


def submit_level(
    stack: Stack, upload: client.Upload, clients: int, each: int, quiet_s: float
) -> results.SubmitLevel:
    """A closed loop: `clients` clients, each submitting `each` times back to back."""
    assert stack.api is not None
    api_log = stack.storage / "logs" / "asr_api.log"
    offset, warmup = api_log.stat().st_size if api_log.exists() else 0, min(clients, 20)
    with phase(stack.pids(), quiet_s) as measured:
        sent, wall = client.submit_all(stack.api.url, [upload] * clients * each, clients, warmup)
    ok = sorted((r for r in sent if r.status == 200), key=lambda r: r.started)
    # The API's log sink writes from a queue: wait until every timed request is in.
    deadline, server_ms = time.monotonic() + 10, client.server_submit_ms(api_log, offset)
    while len(server_ms) < warmup + len(ok) and time.monotonic() < deadline:
        time.sleep(0.2)
        server_ms = client.server_submit_ms(api_log, offset)
    fifth, errors = max(1, len(ok) // 5), [r for r in sent if r.status != 200]
    row = results.SubmitLevel(
        concurrency=clients,
        requests=len(sent),
        errors=len(errors),
        error_samples=sorted({f"{r.status} {r.error}"[:120] for r in errors})[:3],
        wall_s=round(wall, 3),
        requests_per_s=round(len(sent) / wall, 1),
        latency_ms=results.Stats.of([r.latency for r in ok], 1000),
        server_ms=results.Stats.of(server_ms[warmup:]),
        # drift within the level: the backlog (and the retention scan) grows with it
        p50_first_fifth_ms=results.Stats.of([r.latency for r in ok[:fifth]], 1000).p50,
        p50_last_fifth_ms=results.Stats.of([r.latency for r in ok[-fifth:]], 1000).p50,
        **dict(measured),
    )
    log(f"submit c={clients}: {row.requests_per_s} req/s, {row.latency_ms}, errors {len(errors)}")
    return row


def submit(
    stack: Stack, clip: Path, levels: list[tuple[int, int]], quiet_s: float
) -> results.SubmitFigure:
    """Figure 1, with no worker running (the design's latency is "not counting transcription")."""
    assert stack.api is not None
    upload, rows = client.Upload.of(clip), []
    stack.reset_queue_state()
    scans = [retention_scan(stack)]
    for clients, each in levels:
        stack.reset_queue_state()
        rows.append(submit_level(stack, upload, clients, each, quiet_s))
        scans.append(retention_scan(stack))  # against the backlog this level left
    api_rss = rss_mb(stack.api.pid)
    stack.reset_queue_state()
    return results.SubmitFigure(
        upload_check=upload_check(clip),
        clip=results.Clip(file=clip.name, seconds=10, bytes=upload.audio_bytes, codec="opus"),
        levels=rows,
        retention_scan=scans,
        api_rss_mb_after=api_rss,
    )


# --- 2a. queue overhead ---------------------------------------------------------------------------

# The parts of a job's time: (start, end) from the task record and RQ's job hash.
PARTS = {
    "queue_wait": ("created", "started"),
    "in_job_outside_engine": ("started", "finished_less_engine"),  # finished_at - processing
    "api_before_enqueue": ("created", "rq_enqueued"),  # the API storing and checking the upload
    "rq_pickup": ("rq_enqueued", "rq_started"),  # the queue itself: BLPOP wake-up, job fetch
    "job_start": ("rq_started", "started"),  # job load, record read
    "after_finished": ("finished", "rq_ended"),  # history, stats, retention after the result
}


def _span(start: float | None, end: float | None) -> float | None:
    return None if start is None or end is None else end - start


def one_job(
    http: httpx.Client, conn: redis.Redis, upload: client.Upload, poll_s: float
) -> dict[str, float | None]:
    """Submit, poll /result until done: the job's overheads and parts, in seconds."""
    from rq.utils import utcparse  # not at the top: the GPU engine-only run has no rq

    p0 = time.perf_counter()
    resp = http.post(client.SUBMIT, content=upload.body, headers=upload.headers).raise_for_status()
    submit_s, task_id = time.perf_counter() - p0, resp.json()["task_id"]
    while http.get(f"/api/v1/asr/result/{task_id}").json()["status"] not in ("done", "failed"):
        time.sleep(poll_s)
    seen, rec = time.perf_counter() - p0, client.record_of(conn, task_id)
    if rec is None or rec.status != "done" or rec.processing is None or rec.finished is None:
        raise RuntimeError(f"overhead job {task_id} did not finish: {rec}")
    t = {"created": rec.created, "started": rec.started, "finished": rec.finished}
    t["finished_less_engine"] = rec.finished - rec.processing
    rq = conn.hmget(f"rq:job:{task_id}", ["enqueued_at", "started_at", "ended_at"])
    for name, value in zip(("enqueued", "started", "ended"), rq, strict=True):
        t[f"rq_{name}"] = utcparse(value.decode()).timestamp() if value else None
    spans = {n: _span(t[a], t[b]) for n, (a, b) in PARTS.items()}
    return spans | {
        "submit_response": submit_s,
        "processing": rec.processing,
        "client_overhead": seen - rec.processing,
        "server_overhead": rec.finished - rec.created - rec.processing,
    }


def overhead(
    stack: Stack, clip: Path, jobs: int, quiet_s: float, poll_s: float = 0.01
) -> results.OverheadFigure:
    """Figure 2a: jobs one at a time (none waits behind another), each polled as a client would."""
    assert stack.api is not None
    upload, conn = client.Upload.of(clip), stack.conn()
    with (
        phase(stack.pids(), quiet_s) as measured,
        httpx.Client(base_url=stack.api.url, timeout=60) as http,
    ):
        one_job(http, conn, upload, poll_s)  # warms the path up; not counted
        rows = [one_job(http, conn, upload, poll_s) for _ in range(jobs)]

    def ms(name: str) -> results.Stats:
        return results.Stats.of([r[name] for r in rows if r[name] is not None], 1000)

    out = results.OverheadFigure(
        clip=results.Clip(file=clip.name, seconds=10),
        jobs=len(rows),
        poll_interval_ms=poll_s * 1000,
        server_overhead_ms=ms("server_overhead"),
        client_overhead_ms=ms("client_overhead"),
        parts_ms={name: ms(name) for name in ("submit_response", *PARTS)},
        processing_ms=ms("processing"),
        **dict(measured),
    )
    log(f"overhead: server {out.server_overhead_ms}, client {out.client_overhead_ms}")
    return out


# --- 2b. throughput -------------------------------------------------------------------------------


def path_run(
    clips: int,
    audio: float,
    wall: float,
    engine: float,
    cpu_s: dict[str, float],
    measured: results.Phase,
    workers: int | None = None,
) -> results.PathRun:
    return results.PathRun(
        workers=workers,
        clips=clips,
        audio_s=round(audio, 3),
        wall_s=round(wall, 3),
        clips_per_s=round(clips / wall, 3),
        audio_s_per_s=round(audio / wall, 2),
        engine_s_sum=round(engine, 3),
        process_cpu_s=cpu_s,  # CPU seconds each role (workers, api, redis; direct) used
        **dict(measured),
    )


def through_service(stack: Stack, files: list[Path], quiet_s: float) -> results.PathRun:
    """The clips through the service, 10 uploads in flight: first submit to last finished_at."""
    assert stack.api is not None and stack.redis_server and stack.redis_server.proc
    uploads = [client.Upload.of(f) for f in files]
    roles = {"workers": [w.proc.pid for w in stack.workers if w.proc], "api": [stack.api.pid]}
    roles["redis"] = [stack.redis_server.proc.pid]

    def cpu_now() -> dict[str, float]:
        return {role: sum(proc_cpu_seconds(p) for p in pids) for role, pids in roles.items()}

    with phase(stack.pids(), quiet_s) as measured:
        cpu0 = cpu_now()
        sent, _, done = stack.run_jobs(uploads, 10, timeout=1800)
        cpu = {role: round(seconds - cpu0[role], 2) for role, seconds in cpu_now().items()}
    ok = [f for f in done.values() if f.status == "done" and f.finished is not None]
    if len(ok) != len(files):
        raise RuntimeError(f"throughput: {len(ok)} of {len(files)} jobs finished")
    # From the first submit's send, not from before the client's set-up: submit_all waits 50 ms
    # for its clients to line up, which counted as service time (1-1.5 % of this figure).
    wall = max(f.finished or 0 for f in ok) - min(s.started for s in sent)
    engine = sum(f.processing or 0 for f in ok)
    out = path_run(
        len(ok), sum(f.duration or 0 for f in ok), wall, engine, cpu, measured, len(stack.workers)
    )
    log(f"throughput, {out.workers} worker(s): {out.clips} clips in {out.wall_s} s")
    return out


def direct(child: Child, files: list[Path], own_pids: list[int], quiet_s: float) -> results.PathRun:
    """The same clips through `recognize(path)` in a loop in the engine child, decode included."""
    with phase(own_pids, quiet_s) as measured:
        answer = child.call(cmd="loop", name="tiny", files=[str(f) for f in files], warmup=True)
    engine, cpu = sum(answer["processing_s"]), {"direct": answer["cpu_s"]}
    out = path_run(answer["n"], answer["audio_s"], answer["wall_s"], engine, cpu, measured)
    log(f"throughput, direct loop: {out.clips} clips in {out.wall_s} s")
    return out


def throughput(
    stack: Stack,
    child: Child,
    files: list[Path],
    lengths: list[int],
    cfg: results.Config,
    all_workers: results.PathRun | None,
) -> results.ThroughputFigure:
    """Figure 2b: 1 worker against the direct loop, alternated round by round; each path's best
    round is compared (this box is shared), and every round is kept."""
    pairs = [
        results.Round(
            service=through_service(stack, files, cfg.quiet_s),
            direct=direct(child, files, stack.pids(), cfg.quiet_s),
        )
        for _ in range(cfg.throughput_rounds)
    ]
    svc = min((p.service for p in pairs), key=lambda f: f.wall_s)
    dl = min((p.direct for p in pairs), key=lambda f: f.wall_s)
    cpu = svc.process_cpu_s | dl.process_cpu_s
    roles = {"worker": "workers", "api": "api", "redis": "redis", "direct": "direct"}
    return results.ThroughputFigure(
        rounds=pairs,
        service_1_worker=svc,
        direct_loop=dl,
        ratio_1_worker=round(svc.clips_per_s / dl.clips_per_s, 3),
        ratio_per_round=[round(p.service.clips_per_s / p.direct.clips_per_s, 3) for p in pairs],
        cpu_s_per_clip={name: round(cpu[role] / len(files), 3) for name, role in roles.items()},
        cpu_ratio_1_worker=round(cpu["direct"] / cpu["workers"], 3) if cpu["workers"] else None,
        clip_lengths_s=lengths,
        threads_per_process=cfg.threads,
        service_n_workers=all_workers,
        ratio_n_workers=round(all_workers.clips_per_s / dl.clips_per_s, 3) if all_workers else None,
    )


# --- 4. memory and 5. burst -----------------------------------------------------------------------


def redis_memory(stack: Stack) -> results.RedisMemory:
    conn = stack.conn()
    info = conn.info("memory")
    keys = ("used_memory", "used_memory_peak", "used_memory_rss")
    return results.RedisMemory(
        **{f"{k}_mb": round(int(info[k]) / 1024**2, 2) for k in keys}, keys=conn.dbsize()
    )


def leak_check(stack: Stack, clip: Path, jobs: int, wave: int = 8) -> results.LeakCheck:
    """Jobs on one worker in waves of `wave` uploads (the queue stays short, every job looks the
    same), sampling the worker's RSS after each wave."""
    assert stack.api is not None and stack.workers[0].proc is not None
    worker, pid, upload = stack.workers[0], stack.workers[0].proc.pid, client.Upload.of(clip)
    before = rss_mb(pid) or 0.0
    samples, watch = [results.RssSample(jobs=0, rss_mb=before)], CpuWatch(stack.pids())
    while (done := samples[-1].jobs) < jobs:
        n = min(wave, jobs - done)
        _, _, finished = stack.run_jobs([upload] * n, n, 600, 0.05)
        if len(finished) != n or any(f.status != "done" for f in finished.values()):
            raise RuntimeError(f"leak check: {len(finished)} of {n} jobs finished, or failed")
        samples.append(results.RssSample(jobs=done + n, rss_mb=rss_mb(pid)))
    after = rss_mb(pid) or 0.0
    # Growth over the second half is the leak's slope once caches have settled.
    mid = min(samples, key=lambda s: abs(s.jobs - jobs / 2)).rss_mb or after
    out = results.LeakCheck(
        worker=worker.name,
        jobs=samples[-1].jobs,
        clip=results.Clip(file=clip.name, seconds=6.6),
        rss_before_mb=before,
        rss_after_mb=after,
        growth_mb=round(after - before, 1),
        growth_pct=round((after - before) / before * 100, 2),
        second_half_growth_mb=round(after - mid, 1),
        hwm_mb=hwm_mb(pid),
        samples=samples,
        cpu=watch.stop(),
    )
    log(f"leak check: {worker.name} RSS {before} -> {after} MB over {out.jobs} jobs")
    return out


def burst(
    stack: Stack, files: list[Path], lengths: list[int], seed: int, quiet_s: float
) -> results.BurstFigure:
    """Figure 5: every upload on its own connection, all released together, workers running."""
    assert stack.api is not None
    cache: dict[Path, client.Upload] = {}
    uploads = [cache.setdefault(f, client.Upload.of(f)) for f in files]
    with phase(stack.pids(), quiet_s) as measured:
        t0 = time.time()
        submitted, submit_wall, done = stack.run_jobs(uploads, len(uploads), 3600, 0.2)
    ok = [f for f in done.values() if f.status == "done" and f.finished is not None]
    failed = [f for f in done.values() if f.status == "failed"]
    rejected = [s for s in submitted if s.status != 200]
    out = results.BurstFigure(
        clips=len(files),
        lengths_s={"min": min(lengths), "max": max(lengths), "sum": sum(lengths), "seed": seed},
        workers=len(stack.workers),
        accepted=sum(1 for s in submitted if s.task_id),
        rejected=len(rejected),
        rejected_samples=sorted({f"{s.status} {s.error}"[:120] for s in rejected})[:3],
        done=len(ok),
        failed=len(failed),
        failed_samples=sorted({str(f.record.get("error")) for f in failed})[:3],
        all_submitted_s=round(submit_wall, 2),
        all_done_s=round(max(f.finished or 0 for f in ok) - t0, 2) if ok else None,
        queue_wait_s=results.Stats.of(
            [f.queue_wait for f in ok if f.queue_wait is not None], 1.0, 2
        ),
        submit_latency_ms=results.Stats.of([s.latency for s in submitted if s.status == 200], 1000),
        engine_s_sum=round(sum(f.processing or 0 for f in ok), 2),
        jobs_per_worker=dict(Counter(f.worker or "?" for f in ok)),
        redis_used_memory_mb_after=redis_memory(stack).used_memory_mb,
        **dict(measured),
    )
    log(f"burst: {out.done}/{out.clips} done in {out.all_done_s} s, queue wait {out.queue_wait_s}")
    return out
