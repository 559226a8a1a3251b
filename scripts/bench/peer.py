"""A peer figure: FunASR's own `funasr-server` beside this service, same tiny models, same burst.

    uv run --frozen --no-sync python -m scripts.bench.peer --smoke       # 6 clips of 5-10 s
    uv run --frozen --no-sync python -m scripts.bench.peer --clips 100   # 100 clips of 5-30 s

funasr-server (funasr/bin/server.py and _server_app.py, FunASR 1.4.16) is one uvicorn process
whose `async def` route runs `AutoModel.generate` in the request itself: no queue, no worker
process, and the event loop serves nothing else (its /health included) while a clip decodes.
This service takes the upload, answers at once and leaves the work to RQ worker processes.
Both sides get the same N voice notes at once, each on its own connection, while a separate
client polls each one's health endpoint; the figure is what the product promises a caller: the
time until a transcript exists, and whether the server still answers meanwhile.

Both load the same random-weight tiny model dirs (stack.model_dirs) with one torch thread per
process, and by default do the same work per clip: FSMN-VAD, the ASR model, CT punctuation.
funasr-server has neither a thread nor a VAD/punctuation option with `--model-path`: it builds
`AutoModel(model=path)`. But AutoModel merges the model dir's config.yaml into its kwargs before
it reads `ncpu` (torch.set_num_threads, default 4, whatever OMP_NUM_THREADS says), `vad_model`
and `punc_model`. So the peer gets a dir of links to the same files whose config.yaml adds
`ncpu: 1` and names our VAD and punctuation dirs (`overlay`); our workers load the same three
dirs with ncpu=ASR_CPU_THREADS=1. `--peer-pipeline asr-only` leaves VAD and punctuation out
(funasr-server as it ships with --model-path); `both` runs the peer both ways against one burst
of ours. `--peer-threads 0` leaves ncpu at FunASR's default (4 threads).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from scripts.bench.client import Finished, Submitted, Upload
from scripts.bench.common import ROOT, hwm_mb, log, phase, proc_cpu_seconds
from scripts.bench.results import PeerFigure, PeerPipeline, PeerRuns, PeerSide, Stats
from scripts.bench.stack import Stack, model_dirs, seeded_lengths, voice_note
from src.config import DEFAULT_BATCH_JOBS_CPU
from tests.support.processes import free_port

TRANSCRIBE = "/v1/audio/transcriptions"
PEER_HEALTH = "/health"
OURS_HEALTH = "/api/v1/health"
# With --model-path the server names its one model "custom"; the form's default, "fun-asr-nano",
# would make it load the Fun-ASR-Nano engine (a hub download) in the request instead.
PEER_MODEL = "custom"
SMOKE_CLIPS, SMOKE_LENGTHS = 6, (5, 10)  # as run.py's smoke burst
FULL_LENGTHS = (5, 30)
DEFAULT_NCPU = 4  # AutoModel's ncpu when neither the caller nor config.yaml sets it
SEED = 5  # run.py's burst seed: the same clip lengths as figure 5

# What the peer did per clip, beside ours (the product's FSMN-VAD + SeACo-Paraformer + CT punc).
WORK = {
    "same": "both sides run FSMN-VAD + SeACo-Paraformer + CT punctuation on every clip, from the "
    "same model dirs: the peer's ASR dir is a linked copy whose config.yaml names our VAD and "
    "punctuation dirs (vad_model, punc_model), which AutoModel reads as if the caller passed "
    "them. Only ours asks for sentence timestamps (sentence_timestamp=True, the product's "
    "segments); the peer calls generate(batch_size=1), and with a VAD model FunASR batches a "
    "clip's segments by batch_size_s either way (ours 500 s, the peer's default 300 s)",
    "asr-only": "funasr-server, ASR only (as it ships with --model-path): AutoModel(model=path) "
    "alone, so no VAD (the clip is one segment) and no punctuation, the text comes back as "
    "tokens joined by spaces; ours runs FSMN-VAD + SeACo-Paraformer + CT punctuation per clip",
}
NOTES = [
    "ours decodes each upload with PyAV to 16 kHz at submit and in the worker; the peer writes "
    "the upload to a temp file and FunASR reads it (torchaudio, else soundfile, else ffmpeg)",
    "ours: {workers} worker processes x 1 torch thread (ASR_CPU_THREADS=1, ASR_BATCH_JOBS="
    "{batch_jobs}: a worker decodes up to that many queued jobs as one batch, across jobs); "
    "peer: one process x {peer_threads}; neither sets OMP_NUM_THREADS",
    "the peer decodes one request at a time inside its event loop, in arrival order: clips queue "
    "behind each other, and so does a /health probe, behind every request that came before it; "
    "ours answers the submit at once and leaves the decoding to the worker processes",
    "time to transcript: ours = the task record's finished_at (server clock) - the client's "
    "send time; the peer = the HTTP request's latency (it answers with the transcript)",
    "funasr-server runs with uvicorn's access log and FunASR's tqdm bar per request, as it "
    "ships; ours without uvicorn's access log but with its own one-line access log "
    "(asr_api.log), as production runs it. Ours' /api/v1/health reads the "
    "worker beacons in Redis; the peer's /health reads only its own state",
    "each server got a warm-up ({warmup}) before the burst: the first decode in a fresh "
    "process pays one-off imports",
]


def ratio(peer: float | None, ours: float | None) -> float | None:
    """peer / ours, None where either is missing or ours is zero."""
    if peer is None or not ours:
        return None
    return round(peer / ours, 2)


# --- the peer server --------------------------------------------------------------------------


def with_keys(config_yaml: str, keys: dict[str, int | str]) -> str:
    """A FunASR config.yaml with these top-level keys (each replaced, else appended). Values are
    written as JSON scalars, which YAML reads back unchanged (a path with ': ' stays a string)."""
    for key, value in keys.items():
        line = f"{key}: {json.dumps(value)}"
        pattern = rf"(?m)^{re.escape(key)}:.*$"
        if re.search(pattern, config_yaml):
            config_yaml = re.sub(pattern, lambda _m, line=line: line, config_yaml)
        else:
            config_yaml = config_yaml.rstrip("\n") + f"\n{line}\n"
    return config_yaml


def peer_keys(models: dict[str, str], pipeline: PeerPipeline, threads: int) -> dict[str, int | str]:
    """What the peer's config.yaml adds: `ncpu` (0: FunASR's default), and for the same pipeline
    as ours, our VAD and punctuation dirs."""
    keys: dict[str, int | str] = {"ncpu": threads} if threads else {}
    if pipeline == "same":
        keys |= {"vad_model": models["vad"], "punc_model": models["punc"]}
    return keys


def overlay(model_dir: Path, dest: Path, keys: dict[str, int | str]) -> Path:
    """`dest`: links to every file of `model_dir` (the same weights), but a config.yaml with
    `keys`: the one way to set funasr-server's torch threads, VAD and punctuation model without
    changing it, as AutoModel merges config.yaml into its kwargs before it reads them."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in model_dir.iterdir():
        if item.name != "config.yaml":
            (dest / item.name).symlink_to(item.resolve())
    config = (model_dir / "config.yaml").read_text(encoding="utf-8")
    (dest / "config.yaml").write_text(with_keys(config, keys), encoding="utf-8")
    return dest


class PeerServer:
    """`python -m funasr.bin.server` (the `funasr-server` console script) as a real process."""

    def __init__(
        self,
        models: dict[str, str],
        work: Path,
        threads: int = 1,
        pipeline: PeerPipeline = "same",
    ) -> None:
        """`threads` 0: FunASR's default (4 threads); that with "asr-only" runs our ASR dir as
        it is, funasr-server exactly as it ships."""
        asr, keys = Path(models["asr"]), peer_keys(models, pipeline, threads)
        self.model_dir = overlay(asr, work / "asr-model", keys) if keys else asr
        self.log_path, self.port = work / "funasr-server.out", free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def command(self) -> list[str]:
        model = ["--model-path", str(self.model_dir)]
        where = ["--host", "127.0.0.1", "--port", str(self.port)]
        return [sys.executable, "-m", "funasr.bin.server", *model, "--device", "cpu", *where]

    def start(self, timeout: float = 300) -> PeerServer:
        """Start it and wait until /health answers (it loads the model before it listens)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"funasr-server exited ({self.proc.returncode}): {tail}")
            try:
                if httpx.get(self.url + PEER_HEALTH, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass  # not listening yet: it loads the model first
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"funasr-server not up after {timeout:.0f} s; log {self.log_path}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.proc = None


def peer_upload(path: Path, language: str = "zh") -> Upload:
    """The OpenAI-style multipart body funasr-server reads: file, model, language, format."""
    b = "bench" + secrets.token_hex(12)
    disposition = "Content-Disposition: form-data; name="
    fields = {"model": PEER_MODEL, "language": language, "response_format": "json"}
    head = "".join(f'--{b}\r\n{disposition}"{k}"\r\n\r\n{v}\r\n' for k, v in fields.items())
    head += (
        f'--{b}\r\n{disposition}"file"; filename="{path.name}"\r\nContent-Type: audio/ogg\r\n\r\n'
    )
    data = path.read_bytes()
    body = head.encode() + data + f"\r\n--{b}--\r\n".encode()
    return Upload(
        path.name, body, {"content-type": f"multipart/form-data; boundary={b}"}, len(data)
    )


def transcript_of(status: int, content: bytes) -> tuple[str | None, str | None]:
    """(text, error) from one funasr-server answer: its `json` format is {"text": ...}."""
    if status != 200:
        return None, f"{status} {content[:120].decode('utf-8', 'replace')}"
    try:
        body = json.loads(content)
    except ValueError:
        return None, f"200 not JSON: {content[:80]!r}"
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        return None, f"200 without text: {str(body)[:80]}"
    return body["text"], None


@dataclass
class Answer:
    """One transcription request as the client saw it."""

    started: float  # epoch seconds
    latency: float  # seconds
    text: str | None
    error: str | None


async def _transcribe(http: httpx.AsyncClient, upload: Upload) -> Answer:
    started, t0 = time.time(), time.perf_counter()
    try:
        resp = await http.post(TRANSCRIBE, content=upload.body, headers=upload.headers)
    except httpx.HTTPError as exc:
        return Answer(started, time.perf_counter() - t0, None, type(exc).__name__)
    text, error = transcript_of(resp.status_code, resp.content)
    return Answer(started, time.perf_counter() - t0, text, error)


def peer_burst(url: str, uploads: Sequence[Upload], timeout: float = 3600) -> list[Answer]:
    """Every upload on its own connection, all released together (as client.submit_all)."""

    async def main() -> list[Answer]:
        n = len(uploads)
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as http:
            gate = asyncio.Event()

            async def one(upload: Upload) -> Answer:
                await gate.wait()
                return await _transcribe(http, upload)

            tasks = [asyncio.create_task(one(u)) for u in uploads]
            await asyncio.sleep(0.05)
            gate.set()
            return list(await asyncio.gather(*tasks))

    return asyncio.run(main())


class HealthPoller:
    """A probe every `interval` s, on schedule whether or not the previous one was answered (as
    a load balancer's), from a thread with its own event loop and client while the burst runs in
    the main thread: how long a probe arriving at any moment waits, and whether it fails. One
    probe at a time would sample a stalled server only once per stall."""

    def __init__(self, url: str, interval: float, timeout: float = 60) -> None:
        self.url, self.interval, self.timeout = url, interval, timeout
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._poll()), name="health-poller", daemon=True
        )

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)

    async def _probe(self, http: httpx.AsyncClient) -> None:
        t0 = time.perf_counter()
        try:
            status = (await http.get(self.url)).status_code
        except httpx.HTTPError as exc:
            self.errors.append(type(exc).__name__)
            return
        if status == 200:
            self.latencies.append(time.perf_counter() - t0)
        else:
            self.errors.append(str(status))

    async def _poll(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=8)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as http:
            probes: set[asyncio.Task[None]] = set()
            next_at = time.perf_counter()
            while not self._stop.is_set():
                task = asyncio.create_task(self._probe(http))
                probes.add(task)
                task.add_done_callback(probes.discard)
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
            if probes:  # the probes still waiting when the burst ended count too
                await asyncio.wait(probes)


# --- the two sides ------------------------------------------------------------------------------


def _side(
    name: str,
    times: list[tuple[float, float]],  # (send, transcript) epoch seconds of each transcribed clip
    errors: list[str],
    health: HealthPoller,
    hwm: dict[str, float | None],
    **rest: object,
) -> PeerSide:
    first = min((s for s, _ in times), default=None)
    return PeerSide(
        name=name,
        done=len(times),
        errors=len(errors),
        error_samples=sorted(set(errors))[:3],
        wall_s_all_done=round(max(t for _, t in times) - first, 2) if first is not None else None,
        transcript_ms=Stats.of([t - s for s, t in times], 1000),
        health_ms=Stats.of(health.latencies, 1000),
        health_errors=len(health.errors),
        rss_mb=hwm,
        rss_mb_total=round(sum(v or 0.0 for v in hwm.values()), 1),
        **rest,  # type: ignore[arg-type]
    )


def measure_ours(
    models: dict[str, str],
    files: list[Path],
    work: Path,
    workers: int,
    batch_jobs: int,
    interval: float,
    quiet_s: float,
) -> PeerSide:
    """The product's path: submit to the API, completion read from the task records."""
    uploads = [Upload.of(f) for f in files]
    stack = Stack(base=work / "ours", models=models, cpu_threads=1)
    try:
        api = stack.start_redis_and_api()
        # Stack pins ASR_BATCH_JOBS=1 for its own figures; this one runs the product's setting.
        stack.env["ASR_BATCH_JOBS"] = str(batch_jobs)
        stack.wait_workers(stack.start_workers(workers))
        t0 = time.perf_counter()
        stack.run_jobs(uploads[:1] * workers, workers, 600)
        warmup = time.perf_counter() - t0
        api_pids = stack.api_pids()  # one process unless Stack runs uvicorn --workers
        pids = {"api" if p == api.pid else f"api-{p}": p for p in api_pids}
        pids |= {w.name: w.proc.pid for w in stack.workers if w.proc}
        pids["redis"] = stack.redis_pid()
        with phase(stack.pids(), quiet_s) as measured:
            cpu0 = sum(proc_cpu_seconds(p) for p in pids.values())
            with HealthPoller(api.url + OURS_HEALTH, interval) as health:
                sent, _, done = stack.run_jobs(uploads, len(uploads), 3600, 0.1)
            cpu = sum(proc_cpu_seconds(p) for p in pids.values()) - cpu0
        return _side(
            "ours",
            *_ours_times(sent, done),
            health,
            {k: hwm_mb(p) for k, p in pids.items()},
            clips=len(files),
            warmup_s=round(warmup, 2),
            cpu_s=round(cpu, 1),
            text_sample=next(
                (f.record.get("text") for f in done.values() if f.status == "done"), None
            ),
            **dict(measured),
        )
    finally:
        stack.stop()


def _ours_times(
    sent: list[Submitted], done: dict[str, Finished]
) -> tuple[list[tuple[float, float]], list[str]]:
    """(send, finished_at) of each transcribed task, and one error per clip that got none."""
    times, errors = [], []
    for s in sent:
        f = done.get(s.task_id or "")
        if s.task_id is None:
            errors.append(f"submit {s.status} {s.error}"[:120])
        elif f is None:
            errors.append("not done before the timeout")
        elif f.status != "done" or f.finished is None:
            errors.append(f"failed: {f.record.get('error')}"[:120])
        else:
            times.append((s.started, f.finished))
    return times, errors


def measure_peer(
    models: dict[str, str],
    files: list[Path],
    work: Path,
    threads: int,
    interval: float,
    quiet_s: float,
    pipeline: PeerPipeline = "same",
) -> PeerSide:
    """funasr-server: the transcript is the answer to the request."""
    uploads = [peer_upload(f) for f in files]
    server = PeerServer(models, work / f"peer-{pipeline}", threads, pipeline).start()
    try:
        t0 = time.perf_counter()
        warm = peer_burst(server.url, uploads[:1])[0]
        if warm.error:
            raise RuntimeError(f"funasr-server warm-up failed: {warm.error}")
        warmup = time.perf_counter() - t0
        with phase([os.getpid(), server.pid], quiet_s) as measured:
            cpu0 = proc_cpu_seconds(server.pid)
            with HealthPoller(server.url + PEER_HEALTH, interval) as health:
                answers = peer_burst(server.url, uploads)
            cpu = proc_cpu_seconds(server.pid) - cpu0
        ok = [a for a in answers if a.error is None]
        return _side(
            "funasr-server" if pipeline == "same" else "funasr-server, ASR only",
            [(a.started, a.started + a.latency) for a in ok],
            [a.error for a in answers if a.error is not None],
            health,
            {"funasr-server": hwm_mb(server.pid)},
            clips=len(files),
            warmup_s=round(warmup, 2),
            cpu_s=round(cpu, 1),
            text_sample=ok[0].text if ok else None,
            **dict(measured),
        )
    finally:
        server.stop()


def run(
    work: Path,
    clips: int,
    lengths_range: tuple[int, int] = FULL_LENGTHS,
    seed: int = SEED,
    workers: int = 2,
    batch_jobs: int = 0,
    interval: float = 0.075,
    quiet_s: float = 30.0,
    models: dict[str, str] | None = None,
    peer_threads: int = 1,
    peer_pipeline: PeerRuns = "same",
) -> PeerFigure:
    """Our server, then the peer (each way `peer_pipeline` asks: "both" is the same pipeline,
    then ASR only), one after the other on the same clips; each has the machine to itself.
    `batch_jobs` 0 is the service's own default (by device); `models` from stack.model_dirs;
    `peer_threads` 0 runs funasr-server with FunASR's default threads (4)."""
    models = models or model_dirs("tiny")
    lengths = seeded_lengths(clips, *lengths_range, seed)
    files = [voice_note(s, work / "clips") for s in lengths]
    log(f"peer figure: {clips} clips ({sum(lengths)} s of audio); ours first")
    ours = measure_ours(models, files, work, workers, batch_jobs, interval, quiet_s)
    log(f"ours: {ours.done}/{clips} in {ours.wall_s_all_done} s; funasr-server next")
    pipelines: list[PeerPipeline] = (
        ["same", "asr-only"] if peer_pipeline == "both" else [peer_pipeline]
    )
    peers: list[PeerSide] = []
    for pipeline in pipelines:
        side = measure_peer(models, files, work, peer_threads, interval, quiet_s, pipeline)
        log(f"funasr-server ({pipeline}): {side.done}/{clips} in {side.wall_s_all_done} s")
        peers.append(side)
    peer, asr_only = peers[0], (peers[1] if len(peers) > 1 else None)
    jobs = f"{batch_jobs}" if batch_jobs else f"0, the default: {DEFAULT_BATCH_JOBS_CPU} on CPU"
    facts = {"workers": workers, "batch_jobs": jobs, "warmup": f"ours {workers} jobs, peer 1"}
    facts["peer_threads"] = (
        f"{peer_threads} torch thread(s) (ncpu: {peer_threads} in a linked copy of the model "
        "dir's config.yaml, as funasr-server has no thread option)"
        if peer_threads
        else f"{DEFAULT_NCPU} torch threads (FunASR's default ncpu, funasr-server as it ships)"
    )
    return PeerFigure(
        clips=clips,
        lengths_s={"min": min(lengths), "max": max(lengths), "sum": sum(lengths), "seed": seed},
        workers=workers,
        threads_per_process=1,
        peer_threads=peer_threads or DEFAULT_NCPU,
        health_interval_ms=round(interval * 1000, 1),
        peer_pipeline=pipelines[0],
        ours=ours,
        peer=peer,
        ratio_all_done=ratio(peer.wall_s_all_done, ours.wall_s_all_done),
        peer_asr_only=asr_only,
        ratio_all_done_asr_only=ratio(asr_only.wall_s_all_done, ours.wall_s_all_done)
        if asr_only
        else None,
        notes=[WORK[p] for p in pipelines] + [n.format(**facts) for n in NOTES],
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--smoke", action="store_true", help="6 clips of 5-10 s, no quiet wait")
    p.add_argument("--clips", type=int, default=100, help="clips in the burst (100)")
    p.add_argument("--workers", type=int, default=2, help="our worker processes (2)")
    p.add_argument("--batch-jobs", type=int, default=0, help="our ASR_BATCH_JOBS (0: by device)")
    p.add_argument("--interval", type=float, default=0.075, help="health poll interval (s)")
    p.add_argument(
        "--peer-threads", type=int, default=1, help="funasr-server's torch threads (0: as shipped)"
    )
    p.add_argument(
        "--peer-pipeline",
        choices=["same", "asr-only", "both"],
        default="same",
        help="funasr-server's work per clip: same as ours (VAD + ASR + punctuation), asr-only "
        "(as it ships with --model-path), or both, one after the other (same)",
    )
    p.add_argument("--quiet", type=float, default=30.0, help="max wait for a quiet machine (s)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = p.parse_args(argv)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the servers
    clips, lengths, quiet = args.clips, FULL_LENGTHS, args.quiet
    if args.smoke:
        clips, lengths, quiet = SMOKE_CLIPS, SMOKE_LENGTHS, 0.0
    work = Path(tempfile.mkdtemp(prefix="asr-bench-peer-"))
    try:
        figure = run(
            work,
            clips,
            lengths,
            SEED,
            args.workers,
            args.batch_jobs,
            args.interval,
            quiet,
            peer_threads=args.peer_threads,
            peer_pipeline=args.peer_pipeline,
        )
    finally:
        if args.keep:
            log(f"work dir kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(figure.model_dump_json(indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
