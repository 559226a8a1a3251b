"""Soak: many jobs through the real service while workers are SIGKILLed and Redis restarts.

One run starts a private redis-server (deploy/redis/redis.conf, AOF on), the API as a real
uvicorn and the workers through the real supervisor (`scripts/start_workers.sh COUNT`), all on
tiny model directories, then submits a mix of voice notes and long clips over HTTP while an
injector SIGKILLs busy workers (one, both at once, and the only worker of a COUNT=1 supervisor),
restarts Redis (some of them while a job is finishing) and takes Redis away for whole outages.

It counts what a client would see (submitted, refused with 503, done, failed with reasons,
lost: unknown or never finished) and what the service wrote (history lines and completion log
lines per task: a task with two ran twice), and times the requeue after each kill and the
worker restart. The JSON and a markdown section go to --out.

    uv run --frozen --no-sync python -m scripts.soak            # the full soak (~30 min)
    uv run --frozen --no-sync python -m scripts.soak --short    # the CI version (~4 min)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis

from scripts.bench.stack import voice_note
from src.records.redis_client import claimed_key, task_key, worker_key
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV, make_long
from tests.support.processes import ROOT, ApiProcess, RedisServer, service_env
from tests.support.tiny_models import build_model_dirs

MODEL_CACHE = ROOT / "tests" / ".cache" / "models"
CLIP_CACHE = ROOT / "tests" / ".cache" / "soak-clips"
TERMINAL = ("done", "failed")
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)
COMPLETED_RE = re.compile(r"task=(\S+) status=completed")
REQUEUE_TIMEOUT_S = 150.0
RESTART_TIMEOUT_S = 240.0


@dataclass
class Plan:
    """What one soak does; the defaults are the issue's full soak."""

    jobs: int = 1000
    kills: int = 50
    restarts: int = 10
    outages: int = 2
    outage_seconds: float = 30.0
    workers: int = 2
    lone_share: float = 0.1  # share of the jobs run under a COUNT=1 supervisor
    long_share: float = 0.15  # share of long clips (90-300 s) among the jobs
    backlog: int = 12  # queued tasks the submitter keeps ahead of the workers
    settle_seconds: float = 120.0  # after the last fault, how long a task may take to finish
    # A worker killed sooner than the supervisor's QUICK_EXIT_S (10 s) after its start counts as
    # crash-looping and is restarted with a back-off; kill only workers this old (0: any age).
    min_worker_age: float = 12.0
    seed: int = 7


SHORT = {
    "jobs": 100,
    "kills": 5,
    "restarts": 1,
    "outages": 1,
    "outage_seconds": 20.0,
    "lone_share": 0.3,
    "long_share": 0.1,
}


@dataclass
class Event:
    kind: str  # lone_kill | switch | kill | kill_both | restart | restart_finishing | outage
    at_job: int


def schedule(plan: Plan) -> list[Event]:
    """Faults spread over the jobs: lone-worker kills first, then the switch to `workers`."""
    rng = random.Random(plan.seed)
    k = plan.kills
    lone = min(k, max(1, round(k * 0.1)))
    both = min((k - lone) // 2, max(1, round(k * 0.1)))
    single = k - lone - 2 * both
    lone_jobs = max(1, round(plan.jobs * plan.lone_share))
    events = [Event("lone_kill", round(lone_jobs * (i + 1) / (lone + 1))) for i in range(lone)]
    events.append(Event("switch", lone_jobs))
    rest = (
        ["kill"] * single
        + ["kill_both"] * both
        + ["restart_finishing" if i % 2 == 0 else "restart" for i in range(plan.restarts)]
        + ["outage"] * plan.outages
    )
    rng.shuffle(rest)
    span = max(1, round(plan.jobs * 0.92) - lone_jobs)
    for i, kind in enumerate(rest):
        events.append(Event(kind, lone_jobs + round(span * (i + 1) / (len(rest) + 1))))
    return events


def clips(plan: Plan) -> list[Path]:
    """The job mix, seeded: mostly voice notes (6.6-30 s OGG/Opus), some 90-300 s FLAC clips."""
    CLIP_CACHE.mkdir(parents=True, exist_ok=True)
    notes = [SPEECH_OGG, voice_note(15, CLIP_CACHE), voice_note(30, CLIP_CACHE)]
    longs = []
    for seconds in (90, 180, 300):
        path = CLIP_CACHE / f"long_{seconds}s_flac.flac"
        longs.append(path if path.exists() else make_long(SPEECH_WAV, CLIP_CACHE, seconds=seconds))
    rng = random.Random(plan.seed + 1)
    return [
        rng.choice(longs) if rng.random() < plan.long_share else rng.choice(notes)
        for _ in range(plan.jobs)
    ]


def stats_of(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "median": None, "max": None}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 2),
        "max": round(max(values), 2),
    }


def process_age(pid: int) -> float:
    """Seconds since the process started (0 if it is gone)."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


class Stack:
    """Private Redis, storage, API and worker supervisor for one soak; nothing shared."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.redis = RedisServer(base / "redis")
        self.storage = base / "storage"
        self.storage.mkdir(parents=True, exist_ok=True)
        self.pid_dir = base / "pids"
        self.pid_dir.mkdir(exist_ok=True)
        dirs = build_model_dirs(MODEL_CACHE)
        models = {"asr": dirs.asr, "vad": dirs.vad, "punc": dirs.punc}
        self.env = service_env(
            self.redis.port,
            self.storage,
            models,
            LOG_LEVEL="INFO",
            WORKER_PID_DIR=str(self.pid_dir),
        )
        self.api = ApiProcess(self.env, base / "api.out")
        self.supervisor: subprocess.Popen[bytes] | None = None
        self.names: list[str] = []
        self._conn: redis.Redis | None = None

    def conn(self) -> redis.Redis:
        if self._conn is None:
            self._conn = redis.Redis(
                host="127.0.0.1", port=self.redis.port, socket_connect_timeout=1, socket_timeout=3
            )
        return self._conn

    def start(self, workers: int) -> None:
        self.redis.start()
        self.api.start()
        self.start_workers(workers)

    def start_workers(self, count: int, timeout: float = 240) -> float:
        """The real supervisor, in its own session; returns seconds until every worker is ready."""
        script = ROOT / "scripts" / "start_workers.sh"
        argv = [str(script)] if os.access(script, os.X_OK) else ["bash", str(script)]
        out = open(self.base / f"supervisor-{count}.out", "ab")  # noqa: SIM115 - child owns it
        started = time.monotonic()
        self.supervisor = subprocess.Popen(
            [*argv, str(count)],
            cwd=ROOT,
            env={**self.env, "RQ_WORKER_COUNT": str(count)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        out.close()
        self.names = [f"worker-{i}" for i in range(1, count + 1)]
        deadline = started + timeout
        while time.monotonic() < deadline:
            if all(self.ready_pid(n) for n in self.names):
                return time.monotonic() - started
            if self.supervisor.poll() is not None:
                raise RuntimeError(f"supervisor exited with {self.supervisor.returncode}")
            time.sleep(0.2)
        raise TimeoutError(f"workers {self.names} not ready after {timeout}s")

    def stop_workers(self, timeout: float = 90) -> None:
        """SIGTERM the supervisor (warm shutdown); whatever is left after `timeout` is killed."""
        sup = self.supervisor
        if sup is None:
            return
        pids = [p for p in (self.pid_of(n) for n in self.names) if p]
        if sup.poll() is None:
            sup.send_signal(signal.SIGTERM)
            try:
                sup.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(sup.pid, signal.SIGKILL)
                sup.wait(10)
        deadline = time.monotonic() + timeout
        for pid in pids:
            while self.owned(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if self.owned(pid):
                os.kill(pid, signal.SIGKILL)
        self.supervisor = None

    def ready_pid(self, name: str) -> int | None:
        """The pid in worker `name`'s readiness key, if that process is alive and ours."""
        try:
            raw = self.conn().get(worker_key(name))
        except REDIS_DOWN:
            return None
        if not raw:
            return None
        pid = int(json.loads(raw).get("pid") or 0)
        return pid if self.owned(pid) else None

    def pid_file(self, name: str) -> int | None:
        try:
            return int((self.pid_dir / f"asr-{name}.pid").read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def pid_of(self, name: str) -> int | None:
        return self.ready_pid(name) or self.pid_file(name)

    def owned(self, pid: int) -> bool:
        """A live worker of this soak: its environment names this soak's storage directory."""
        if pid <= 0 or (self.supervisor is not None and pid == self.supervisor.pid):
            return False
        if not pid_alive(pid):
            return False
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            return False
        return f"STORAGE_PATH={self.storage}".encode() in environ

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_workers(30)
        self.api.stop()
        self.redis.stop()


@dataclass
class Kill:
    kind: str
    worker: str
    pid: int
    task: str | None
    at_s: float
    attempts_before: int | None = None
    collateral: list[str] = field(default_factory=list)
    requeue_s: float | None = None
    outcome: str = "pending"
    restart_s: float | None = None
    spawn_s: float | None = None
    new_pid: int | None = None


@dataclass
class RedisFault:
    kind: str  # restart | outage
    signal: str
    at_s: float
    down_s: float = 0.0
    timing: str = ""
    processing: list[str] = field(default_factory=list)
    refused: int = 0  # submissions answered 503 meanwhile


class Soak:
    """Submitter, status tracker and fault injector threads around one Stack."""

    def __init__(self, plan: Plan, stack: Stack, out: Path) -> None:
        self.plan = plan
        self.stack = stack
        self.out = out
        self.rng = random.Random(plan.seed + 2)
        self.clips = clips(plan)
        self.events = schedule(plan)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.submit_done = threading.Event()
        self.need_work = threading.Event()  # the injector waits for a busy worker
        self.redis_away = threading.Event()  # an outage: submit anyway, to be refused honestly
        self.inject_done = threading.Event()
        self.accepted: dict[str, dict[str, Any]] = {}  # task_id -> {clip, index, at_s}
        self.status: dict[str, dict[str, Any]] = {}  # task_id -> last task record seen
        self.statuses_seen: dict[str, list[str]] = defaultdict(list)
        self.refused = 0
        self.submit_errors: Counter[str] = Counter()
        self.gave_up = 0
        self.attempts = 0
        self.events_done = 0
        self.hit: set[str] = set()
        self.kills: list[Kill] = []
        self.redis_faults: list[RedisFault] = []
        self.fault_windows: list[tuple[float, float]] = []
        self.last_fault_end = 0.0
        self.phase_times: dict[str, float] = {}
        self.measurers: list[threading.Thread] = []
        self.timeline = open(out / "timeline.jsonl", "a")  # noqa: SIM115 - closed in run()

    # --- helpers -----------------------------------------------------------------------------

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 2)

    def note(self, what: str, **data: Any) -> None:
        line = {"t": self.now(), "event": what, **data}
        with self.lock, contextlib.suppress(ValueError):  # ValueError: closed at the end
            self.timeline.write(json.dumps(line) + "\n")
            self.timeline.flush()
        print(f"[soak {line['t']:7.1f}s] {what} {json.dumps(data) if data else ''}", flush=True)

    def redis_try(self, fn: Callable[[redis.Redis], Any], default: Any = None) -> Any:
        try:
            return fn(self.stack.conn())
        except REDIS_DOWN:
            return default

    def task(self, task_id: str) -> dict[str, Any] | None:
        raw = self.redis_try(lambda c: c.get(task_key(task_id)))
        return json.loads(raw) if raw else None

    def busy(self, names: list[str]) -> dict[str, tuple[int, str]]:
        """name -> (pid, current RQ job) for each of `names` now running a job; RQ's own hash."""
        found: dict[str, tuple[int, str]] = {}
        for name in names:
            info = self.redis_try(lambda c, n=name: c.hgetall(f"rq:worker:{n}"), {}) or {}
            data = {k.decode(): v.decode() for k, v in info.items()}
            job, pid = data.get("current_job"), int(data.get("pid") or 0)
            if job and self.stack.owned(pid):
                found[name] = (pid, job)
        return found

    def backlog(self) -> int:
        with self.lock:
            return sum(
                1
                for t in self.accepted
                if self.status.get(t, {}).get("status", "queued") == "queued"
            )

    # --- submitter ---------------------------------------------------------------------------

    def submitter(self) -> None:
        with httpx.Client(base_url=self.stack.api.url, timeout=30) as client:
            for index, clip in enumerate(self.clips):
                if self.stop.is_set():
                    break
                self.pace(index)
                self.submit_one(client, index, clip)
        self.submit_done.set()
        self.note("submitter done", accepted=len(self.accepted), refused=self.refused)

    def pace(self, index: int) -> None:
        """Keep `backlog` tasks queued. While the fault schedule lags more than a backlog behind
        (a kill waits for a worker that has lived min_worker_age, an outage lasts its seconds),
        or the last jobs are due with faults still to come, submit only when a fault waits for
        a busy worker: every kill then lands mid-job instead of on a worker left idle."""
        deadline = time.monotonic() + 600
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.redis_away.is_set():
                return
            pending = self.events[self.events_done :]
            tail = bool(pending) and index >= self.plan.jobs - self.plan.backlog
            behind = tail or (bool(pending) and pending[0].at_job < index - self.plan.backlog)
            if behind:
                if self.need_work.is_set() and self.backlog() < 2 * self.plan.workers:
                    return
            elif self.backlog() < self.plan.backlog:
                return
            time.sleep(0.2)

    def submit_one(self, client: httpx.Client, index: int, clip: Path) -> None:
        payload = clip.read_bytes()
        mime = "audio/ogg" if clip.suffix == ".ogg" else "audio/flac"
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and not self.stop.is_set():
            self.attempts += 1
            try:
                resp = client.post(
                    "/api/v1/asr/submit", files={"audio": (clip.name, payload, mime)}
                )
            except httpx.HTTPError as exc:
                self.submit_errors[f"transport: {type(exc).__name__}"] += 1
                time.sleep(1)
                continue
            if resp.status_code == 200:
                task_id = resp.json()["task_id"]
                with self.lock:
                    self.accepted[task_id] = {"clip": clip.name, "index": index, "at_s": self.now()}
                    self.status[task_id] = {"status": "queued"}
                return
            if resp.status_code == 503:
                self.refused += 1
            else:
                try:
                    err = resp.json().get("error", "")
                except ValueError:
                    err = resp.text[:100]
                self.submit_errors[f"{resp.status_code}: {err}"] += 1
            time.sleep(1)
        self.gave_up += 1

    # --- tracker -----------------------------------------------------------------------------

    def tracker(self) -> None:
        """Every 0.5 s: the task records of unfinished tasks, read straight from Redis."""
        while not self.stop.is_set():
            with self.lock:
                open_ids = [
                    t for t in self.accepted if self.status[t].get("status") not in TERMINAL
                ]
            for start in range(0, len(open_ids), 200):
                chunk = open_ids[start : start + 200]
                raws = self.redis_try(lambda c, ch=chunk: c.mget([task_key(t) for t in ch]))
                if raws is None:
                    break
                with self.lock:
                    for task_id, raw in zip(chunk, raws, strict=True):
                        record = json.loads(raw) if raw else {"status": "absent"}
                        state = record.get("status", "?")
                        seen = self.statuses_seen[task_id]
                        if not seen or seen[-1] != state:
                            seen.append(state)
                        self.status[task_id] = record
            time.sleep(0.5)

    def open_tasks(self) -> list[str]:
        with self.lock:
            return [t for t in self.accepted if self.status[t].get("status") not in TERMINAL]

    # --- injector ----------------------------------------------------------------------------

    def injector(self) -> None:
        try:
            for event in self.events:
                while (
                    len(self.accepted) < event.at_job
                    and not self.submit_done.is_set()
                    and not self.stop.is_set()
                ):
                    time.sleep(0.1)
                if self.stop.is_set():
                    break
                began = time.monotonic()
                self.run_event(event)
                self.fault_windows.append((began - self.t0, time.monotonic() - self.t0))
                if event.kind != "switch":
                    self.last_fault_end = time.monotonic()
                self.events_done += 1
        except Exception as exc:
            self.note("injector failed", error=repr(exc))
            raise
        finally:
            self.inject_done.set()

    def run_event(self, event: Event) -> None:
        kind = event.kind
        if kind in ("lone_kill", "kill"):
            self.wait_all_ready()
            self.kill(kind, 1)
        elif kind == "kill_both":
            self.wait_all_ready()
            self.kill(kind, 2)
        elif kind == "switch":
            self.switch()
        elif kind.startswith("restart"):
            self.restart_redis(finishing=kind == "restart_finishing")
        elif kind == "outage":
            self.outage()

    def wait_all_ready(self, timeout: float = 120) -> None:
        """Every worker ready and at least min_worker_age old (bounded)."""
        deadline = time.monotonic() + timeout

        def ready(name: str) -> bool:
            pid = self.stack.ready_pid(name)
            return bool(pid) and process_age(pid or 0) >= self.plan.min_worker_age

        while time.monotonic() < deadline and not all(ready(n) for n in self.stack.names):
            time.sleep(0.2)

    def batch_of(self, name: str, job: str) -> set[str]:
        """Tasks a kill of `name` would take down besides `job`: its claimed batch members and
        the tasks the tracker last saw processing on it."""
        claimed = self.redis_try(lambda c: c.lrange(claimed_key(name), 0, -1), []) or []
        with self.lock:
            mates = {
                t
                for t, r in self.status.items()
                if r.get("status") == "processing" and r.get("worker_id") == name
            }
        return ({x.decode() for x in claimed} | mates) - {job}

    def kill(self, kind: str, count: int) -> None:
        """SIGKILL `count` workers busy with tasks no earlier kill took down (for 30 s it also
        spares workers whose batch holds such a task, then only their own job must be new)."""
        names = self.stack.names
        started = time.monotonic()
        victims: dict[str, tuple[int, str]] = {}
        self.need_work.set()
        while time.monotonic() < started + 60 and not self.stop.is_set():
            strict = time.monotonic() < started + 30
            busy = {
                n: v
                for n, v in self.busy(names).items()
                if v[1] not in self.hit and not (strict and self.batch_of(n, v[1]) & self.hit)
            }
            if len(busy) >= min(count, len(names)):
                chosen = self.rng.sample(sorted(busy), min(count, len(busy)))
                # Land at a random point of the job, not always right at its start.
                time.sleep(self.rng.uniform(0, 0.4))
                again = self.busy(chosen)
                if all(again.get(n) == busy[n] for n in chosen):
                    victims = {n: busy[n] for n in chosen}
                    break
            time.sleep(0.05)
        self.need_work.clear()
        if len(victims) < count:  # not enough busy workers: kill idle ones to make up the count
            for name in names:
                if name not in victims and len(victims) < count:
                    pid = self.stack.pid_of(name)
                    if pid and self.stack.owned(pid):
                        victims[name] = (pid, "")
        records = []
        for name, (pid, job) in victims.items():
            record = Kill(kind, name, pid, job or None, self.now())
            if job:
                record.attempts_before = (self.task(job) or {}).get("attempts")
                record.collateral = sorted(self.batch_of(name, job))
                self.hit.update([job, *record.collateral])
            records.append(record)
        for record in records:
            if self.stack.owned(record.pid):
                os.kill(record.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        for record in records:
            self.kills.append(record)
            self.note("kill", **{k: v for k, v in asdict(record).items() if v not in (None, [])})
            thread = threading.Thread(target=self.measure, args=(record, killed_at), daemon=True)
            thread.start()
            self.measurers.append(thread)

    def measure(self, record: Kill, killed_at: float) -> None:
        """Time the requeue (API view of the task) and the worker's restart (readiness pid)."""
        old_file_pid = record.pid
        client = httpx.Client(base_url=self.stack.api.url, timeout=5)
        requeue_open = record.task is not None
        if not requeue_open:
            record.outcome = "no task (idle worker)"
        deadline = killed_at + max(REQUEUE_TIMEOUT_S, RESTART_TIMEOUT_S)
        try:
            while time.monotonic() < deadline and (requeue_open or record.restart_s is None):
                elapsed = time.monotonic() - killed_at
                if record.spawn_s is None:
                    pid = self.stack.pid_file(record.worker)
                    if pid and pid != old_file_pid:
                        record.spawn_s = round(elapsed, 2)
                if record.restart_s is None:
                    pid = self.stack.ready_pid(record.worker)
                    if pid and pid != record.pid:
                        record.restart_s, record.new_pid = round(elapsed, 2), pid
                if requeue_open and elapsed > REQUEUE_TIMEOUT_S:
                    record.outcome = f"not requeued within {REQUEUE_TIMEOUT_S:.0f}s"
                    requeue_open = False
                if requeue_open:
                    requeue_open = self._check_requeue(client, record, elapsed)
                time.sleep(0.1)
        finally:
            client.close()
        self.note(
            "kill measured",
            worker=record.worker,
            task=record.task,
            outcome=record.outcome,
            requeue_s=record.requeue_s,
            restart_s=record.restart_s,
            spawn_s=record.spawn_s,
        )

    def _check_requeue(self, client: httpx.Client, record: Kill, elapsed: float) -> bool:
        """False once the killed task's fate is known: requeued, failed, or it had finished."""
        try:
            resp = client.get(f"/api/v1/asr/result/{record.task}")
        except httpx.HTTPError:
            return True
        if resp.status_code == 404:
            record.outcome = "task unknown (404)"
            return False
        if resp.status_code != 200:
            return True
        body = resp.json()
        before = record.attempts_before or 0
        moved_on = body.get("attempts", 0) > before
        if body["status"] == "queued" or (body["status"] != "failed" and moved_on):
            record.requeue_s = round(elapsed, 2)
            record.outcome = "requeued"
            return False
        if body["status"] == "done":
            record.outcome = "finished before the kill landed"
            return False
        if body["status"] == "failed":
            record.outcome = f"failed: {body.get('error')}"
            return False
        return True

    def switch(self) -> None:
        """End of the lone-worker phase: stop its supervisor (warm), start `workers` workers."""
        # The lone worker must get the chance to recover its predecessor's job by itself: wait
        # until every lone kill's requeue and restart are measured (or timed out).
        deadline = time.monotonic() + max(REQUEUE_TIMEOUT_S, RESTART_TIMEOUT_S) + 10
        while time.monotonic() < deadline and any(
            k.restart_s is None or k.outcome == "pending"
            for k in self.kills
            if k.kind == "lone_kill"
        ):
            time.sleep(0.2)
        began = time.monotonic()
        self.stack.stop_workers()
        ready = self.stack.start_workers(self.plan.workers)
        self.phase_times["switch_s"] = round(time.monotonic() - began, 1)
        self.note("switch", workers=self.plan.workers, ready_s=round(ready, 1))

    def processing_now(self) -> list[str]:
        return sorted(job for _, job in self.busy(self.stack.names).values())

    def restart_redis(self, finishing: bool) -> None:
        """Stop Redis (SIGTERM or SIGKILL, alternately) and start it again on its AOF."""
        sig = signal.SIGKILL if len(self.redis_faults) % 2 else signal.SIGTERM
        timing = "any moment"
        if finishing:
            timing = "no job near its end within 30 s"
            deadline = time.monotonic() + 30
            self.need_work.set()
            while time.monotonic() < deadline:
                near = [
                    (t, rec.get("progress", 0))
                    for t in self.processing_now()
                    if (rec := self.task(t) or {}).get("progress", 0) >= 80
                ]
                if near:
                    timing = f"task {near[0][0]} at {near[0][1]}%"
                    break
                time.sleep(0.02)
            self.need_work.clear()
        fault = RedisFault("restart", sig.name, self.now(), timing=timing)
        fault.processing = self.processing_now()
        refused_before = self.refused
        began = time.monotonic()
        self.stack.redis.stop(sig)
        self.stack.redis.start()
        fault.down_s = round(time.monotonic() - began, 2)
        time.sleep(2)  # count the refusals of the submits in flight around the restart
        fault.refused = self.refused - refused_before
        self.redis_faults.append(fault)
        self.note("redis restart", **asdict(fault))

    def outage(self) -> None:
        fault = RedisFault("outage", "SIGTERM", self.now(), timing=f"{self.plan.outage_seconds}s")
        fault.processing = self.processing_now()
        refused_before = self.refused
        began = time.monotonic()
        self.stack.redis.stop(signal.SIGTERM)
        self.redis_away.set()
        self.note("redis down", processing=fault.processing)
        self.stop.wait(self.plan.outage_seconds)
        self.stack.redis.start()
        self.redis_away.clear()
        fault.down_s = round(time.monotonic() - began, 2)
        fault.refused = self.refused - refused_before
        self.redis_faults.append(fault)
        self.note("redis up", down_s=fault.down_s, refused=fault.refused)

    # --- the run -----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        threads = [
            threading.Thread(target=self.tracker, name="tracker", daemon=True),
            threading.Thread(target=self.submitter, name="submitter", daemon=True),
            threading.Thread(target=self.injector, name="injector", daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            self.wait_end()
        finally:
            self.stop.set()
            for thread in threads:
                thread.join(30)
            for thread in self.measurers:
                thread.join(1)
            self.timeline.close()
        return self.account()

    def wait_end(self) -> None:
        """Until every accepted task is terminal, or settle_seconds after the last fault passed
        with nothing finishing (a queue still draining is not a loss)."""
        cap = time.monotonic() + 3 * 3600
        while not (self.submit_done.is_set() and self.inject_done.is_set()):
            if time.monotonic() > cap:
                raise TimeoutError("submitter or injector did not finish")
            time.sleep(0.5)
        self.last_fault_end = self.last_fault_end or time.monotonic()
        self.note("all submitted and injected; settling", open=len(self.open_tasks()))
        last_open, last_progress = len(self.open_tasks()), time.monotonic()
        hard = time.monotonic() + 900
        while time.monotonic() < hard:
            left = len(self.open_tasks())
            if left == 0:
                break
            if left != last_open:
                last_open, last_progress = left, time.monotonic()
            settled = time.monotonic() > self.last_fault_end + self.plan.settle_seconds
            if settled and time.monotonic() - last_progress > 30:
                break
            time.sleep(0.5)
        while any(t.is_alive() for t in self.measurers) and time.monotonic() < hard:
            time.sleep(0.5)
        self.note("settled", open=len(self.open_tasks()))

    # --- accounting --------------------------------------------------------------------------

    def final_results(self) -> dict[str, dict[str, Any]]:
        """Every accepted task as a client sees it now (GET /result), after the run."""
        results: dict[str, dict[str, Any]] = {}
        with httpx.Client(base_url=self.stack.api.url, timeout=10) as client:
            for task_id in self.accepted:
                results[task_id] = {"status": "no answer from the API"}
                for _ in range(30):
                    try:
                        resp = client.get(f"/api/v1/asr/result/{task_id}")
                    except httpx.HTTPError:
                        time.sleep(1)
                        continue
                    if resp.status_code == 404:
                        results[task_id] = {"status": "unknown (404)"}
                    elif resp.status_code == 200:
                        results[task_id] = resp.json()
                    else:
                        time.sleep(1)
                        continue
                    break
        return results

    def account(self) -> dict[str, Any]:
        results = self.final_results()
        logs = self.stack.storage / "logs"
        with self.lock:
            clips_of = {t: a["clip"] for t, a in self.accepted.items()}
            seen = {t: list(v) for t, v in self.statuses_seen.items()}
        tallied = tally(
            clips_of,
            results,
            read_history(logs / "asr_history.jsonl"),
            read_completions(logs),
            self.kills,
            self.redis_faults,
            seen,
        )
        requeued = [k.requeue_s for k in self.kills if k.requeue_s is not None]
        kill_outcomes = Counter(k.outcome for k in self.kills)
        by_kind = Counter(k.kind for k in self.kills)
        return {
            "plan": asdict(self.plan),
            "wall_s": self.now(),
            "submissions": {
                "attempts": self.attempts,
                "accepted": len(self.accepted),
                "refused_503": self.refused,
                "errors": dict(self.submit_errors),
                "gave_up": self.gave_up,
            },
            **tallied,
            "kills": {
                "count": len(self.kills),
                "by_kind": dict(by_kind),
                "outcomes": dict(kill_outcomes),
                "requeue_s": stats_of(requeued),
                "requeue_s_lone": stats_of(
                    [k.requeue_s for k in self.kills if k.kind == "lone_kill" and k.requeue_s]
                ),
                "restart_s": stats_of([k.restart_s for k in self.kills if k.restart_s]),
                "spawn_s": stats_of([k.spawn_s for k in self.kills if k.spawn_s]),
                "not_restarted": sum(1 for k in self.kills if k.restart_s is None),
                "distinct_tasks_hit": len({k.task for k in self.kills if k.task}),
                "records": [asdict(k) for k in self.kills],
            },
            "redis": {
                "restarts": sum(1 for f in self.redis_faults if f.kind == "restart"),
                "outages": sum(1 for f in self.redis_faults if f.kind == "outage"),
                "faults": [asdict(f) for f in self.redis_faults],
            },
            "phases": self.phase_times,
        }


def read_history(path: Path) -> dict[str, list[dict[str, Any]]]:
    """The JSONL history, task id -> its lines (one per finished execution)."""
    history: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            entry = json.loads(line)
            history[entry["task_id"]].append(entry)
    return history


def read_completions(logs: Path) -> Counter[str]:
    """`status=completed` lines per task in every worker log, rotated ones included."""
    completions: Counter[str] = Counter()
    for path in sorted(logs.glob("asr_worker*.log*")):
        completions.update(COMPLETED_RE.findall(path.read_text(errors="replace")))
    return completions


def tally(
    clips_of: dict[str, str],
    results: dict[str, dict[str, Any]],
    history: dict[str, list[dict[str, Any]]],
    completions: Counter[str],
    kills: list[Kill],
    faults: list[RedisFault],
    seen: dict[str, list[str]],
) -> dict[str, Any]:
    """Outcomes per accepted task: done, failed (why), lost, and which ran twice.

    `results` is the API's answer for each task after the run; anything not done or failed
    there (404 included) is lost. A task with two history lines or two completion log lines
    was executed twice, whatever its final state.
    """
    victims = {k.task: k for k in kills if k.task}
    mates = {t: k for k in kills for t in k.collateral}
    in_fault = {t: f for f in faults for t in f.processing}
    done = [t for t in clips_of if results[t]["status"] == "done"]
    failed = [t for t in clips_of if results[t]["status"] == "failed"]
    lost = [t for t in clips_of if results[t]["status"] not in TERMINAL]
    twice = sorted(t for t in clips_of if len(history.get(t, [])) > 1 or completions[t] > 1)
    no_line = sorted(t for t in done + failed if not history.get(t))
    mismatch = sorted(
        t
        for t in done + failed
        if history.get(t) and history[t][-1]["status"] != ("success" if t in done else "failed")
    )

    def why(task_id: str) -> str:
        links = []
        if task_id in victims:
            links.append(f"killed mid-job ({victims[task_id].kind} of {victims[task_id].worker})")
        if task_id in mates:
            links.append(f"in the batch of a killed worker ({mates[task_id].worker})")
        if task_id in in_fault:
            fault = in_fault[task_id]
            links.append(f"running during a Redis {fault.kind} at {fault.at_s:.0f}s")
        return "; ".join(links) or "not hit by a fault"

    def detail(task_id: str) -> dict[str, Any]:
        r = results[task_id]
        return {
            "task_id": task_id,
            "status": r.get("status"),
            "stage": r.get("stage"),
            "attempts": r.get("attempts"),
            "error": r.get("error"),
            "clip": clips_of[task_id],
            "link": why(task_id),
            "seen": seen.get(task_id, []),
            "history_lines": len(history.get(task_id, [])),
            "completions": completions[task_id],
        }

    reasons = Counter(results[t].get("error") or "(no error text)" for t in failed)
    return {
        "outcomes": {
            "done": len(done),
            "failed": len(failed),
            "lost": len(lost),
            "failed_reasons": dict(reasons),
            "failed_unexplained": sum(1 for t in failed if not results[t].get("error")),
            "failed_tasks": [detail(t) for t in failed],
            "lost_tasks": [detail(t) for t in lost],
        },
        "executed_twice": {"count": len(twice), "tasks": [detail(t) for t in twice]},
        "records": {
            "history_lines": sum(len(history.get(t, [])) for t in clips_of),
            "finished_without_history_line": no_line,
            "history_status_mismatch": mismatch,
            "completion_log_lines": sum(completions[t] for t in clips_of),
        },
    }


def sec(value: float | None) -> str:
    return "–" if value is None else f"{value} s"


def markdown(summary: dict[str, Any], command: str, started: str) -> str:
    """The report section: what ran, and the figures a reader checks first."""
    s, o, k, r = summary["submissions"], summary["outcomes"], summary["kills"], summary["redis"]
    plan = summary["plan"]
    rq, rs, sp = k["requeue_s"], k["restart_s"], k["spawn_s"]
    kinds = ", ".join(f"{v} {n}" for n, v in k["by_kind"].items())
    lines = [
        f"Run of {started}, `{command}`: {plan['jobs']} jobs, {plan['workers']} workers "
        f"({round(plan['jobs'] * plan['lone_share'])} of them under `RQ_WORKER_COUNT=1`), "
        f"wall time {summary['wall_s'] / 60:.1f} min.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| submitted (accepted with a task id) | {s['accepted']} |",
        f"| refused with 503 while Redis was away (retried later) | {s['refused_503']} |",
        f"| other submit errors | {sum(s['errors'].values())} {s['errors'] or ''} |",
        f"| done | {o['done']} |",
        f"| failed | {o['failed']} |",
        f"| lost (unknown, or not finished {plan['settle_seconds']:.0f} s after the last fault) "
        f"| **{o['lost']}** |",
        f"| executed twice (two history lines or two completions) "
        f"| **{summary['executed_twice']['count']}** |",
        f"| worker SIGKILLs | {k['count']} ({kinds}), "
        f"{k['distinct_tasks_hit']} distinct tasks hit |",
        f"| requeue after a kill (kill → task `queued` or running again), median / max "
        f"| {sec(rq['median'])} / {sec(rq['max'])} (n={rq['n']}) |",
        f"| worker restart (kill → readiness with a new pid), median / max "
        f"| {sec(rs['median'])} / {sec(rs['max'])} (n={rs['n']}; supervisor respawn "
        f"{sec(sp['median'])}) |",
        f"| Redis restarts / outages | {r['restarts']} / {r['outages']} |",
    ]
    if o["failed_reasons"]:
        lines += ["", "Failures:", ""]
        lines += [f"- {n} × `{reason}`" for reason, n in o["failed_reasons"].items()]
    if o["lost_tasks"]:
        lines += ["", "Lost:", ""]
        for t in o["lost_tasks"]:
            lines.append(
                f"- `{t['task_id']}` {t['status']} (stage {t['stage']}, attempts {t['attempts']},"
                f" {t['link']}; seen {' → '.join(t['seen'])})"
            )
    if k["outcomes"]:
        lines += ["", "Kill outcomes: " + ", ".join(f"{v} {n}" for n, v in k["outcomes"].items())]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> tuple[Plan, Path | None, bool]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="the CI preset (about 4 minutes)")
    defaults = Plan()
    for name in (
        "jobs",
        "kills",
        "restarts",
        "outages",
        "outage_seconds",
        "workers",
        "lone_share",
        "long_share",
        "backlog",
        "settle_seconds",
        "seed",
        "min_worker_age",
    ):
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None)
    parser.add_argument("--out", type=Path, default=None, help="directory for soak.json/soak.md")
    parser.add_argument(
        "--clean", action="store_true", help="remove the work dir (Redis data, storage, logs)"
    )
    args = parser.parse_args(argv)
    values = asdict(defaults) | (SHORT if args.short else {})
    values |= {k: v for k, v in vars(args).items() if k in values and v is not None}
    return Plan(**values), args.out, not args.clean


@contextlib.contextmanager
def workdir(keep: bool) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="asr-soak-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    plan, out, keep = parse_args(argv)
    keep = keep or out is None  # the report lies in the work dir then
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python -m scripts.soak " + " ".join(sys.argv[1:] if argv is None else argv)
    with workdir(keep) as base:
        out = out or base
        out.mkdir(parents=True, exist_ok=True)
        stack = Stack(base)
        print(f"[soak] work dir {base}; plan {asdict(plan)}", flush=True)
        try:
            stack.start(1)  # the lone-worker phase comes first
            summary = Soak(plan, stack, out).run()
        finally:
            stack.close()
        summary |= {"started": started, "command": command, "work_dir": str(base)}
        (out / "soak.json").write_text(json.dumps(summary, indent=2))
        (out / "soak.md").write_text(markdown(summary, command.strip(), started))
    print((out / "soak.md").read_text())
    print(f"[soak] wrote {out / 'soak.json'} and {out / 'soak.md'}")
    o = summary["outcomes"]
    ok = o["lost"] == 0 and summary["executed_twice"]["count"] == 0 and not o["failed_unexplained"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
