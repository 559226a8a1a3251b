"""The worker process: load the engine once, then serve RQ jobs in this same process.

RQ's default Worker forks a child per job; the child would reload the model (seconds to minutes)
and cannot use a CUDA context created in the parent. A `SimpleWorker` runs jobs in-process, so
the model stays loaded, while RQ keeps its registries, job timeouts (SIGALRM) and `rq info`.
Crash isolation comes from the supervisor instead (`scripts/start_workers.sh`, systemd).

Run: `python -m src.worker --name worker-1`.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from loguru import logger
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.exceptions import NoSuchJobError
from rq.executions import Execution
from rq.job import Job
from rq.worker import WorkerStatus
from rq.worker_registration import unregister

from src.config import Settings, get_settings
from src.engine.interface import Engine
from src.logs import setup_logging
from src.queue import job_queue
from src.queue.job_queue import JOB_FUNC, get_lanes
from src.queue.recovery import (
    Owner,
    note_redis_outage,
    pid_alive,
    requeue_everywhere,
    return_claimed,
    worker_alive,
)
from src.records import task_store
from src.records.redis_client import (
    REDIS_ERRORS,
    api_connection,
    decoded,
    execution_owner_key,
    worker_connection,
)
from src.results import stats
from src.service.callbacks import DeliveryFailed
from src.uploads import recordings
from src.worker.context import WorkerContext, bound
from src.worker.startup import StartBeacon, load_when_possible

READINESS_INTERVAL_S = 5
# RQ's worker heartbeat (its key's TTL and `last_heartbeat`) sent by default no more often than
# this: RQ sends one after each job, one before and one after each dequeue, two round trips each.
HEARTBEAT_MIN_INTERVAL_S = 1.0
READINESS_TTL_S = 15
SWEEP_LOCK_KEY = "asr:sweep:lock"


class ASRWorker(SimpleWorker):
    """RQ's in-process worker, named worker-N, that also runs the jobs a batch claimed.

    `owner` is this process's identity; every job it starts is recorded under it, so a restarted
    worker of the same name never looks like the owner of its predecessor's job. `context` is
    what its jobs run with (src/worker/context.py); it is optional only so that tests can drive
    RQ's bookkeeping (prepare_execution, ...) without a model, and `work` refuses to run without.
    """

    def __init__(self, *args: Any, context: WorkerContext | None = None, **kwargs: Any) -> None:
        if context is not None:
            kwargs.setdefault("name", context.name)
        super().__init__(*args, **kwargs)
        self.context = context
        self.owner = Owner(name=self.name)
        self.queue_class = job_queue.ServiceQueue.held_by(self.owner.to_json())
        # When the last heartbeat with the default TTL went (monotonic); None: another TTL since.
        self._default_beat_at: float | None = None

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat in one round trip, and none when the last one with the default TTL
        (worker_ttl + 60 s) is under HEARTBEAT_MIN_INTERVAL_S old and no other TTL was set since.

        RQ sends three per job, two commands each without a pipeline: 6 of the worker's ~38
        Redis round trips a job, about 0.7 ms of its ~8 ms between two jobs. Skipping one leaves
        the key's expiry at most a second short of 8 minutes. A heartbeat with a job's own TTL
        (prepare_job_execution) is always sent, and the next default one after it too.
        """
        if timeout is not None:
            self._default_beat_at = None
            super().heartbeat(timeout, pipeline)
            return
        now = time.monotonic()
        if pipeline is not None:  # the caller executes it (is_suspended, at once)
            super().heartbeat(pipeline=pipeline)
        elif (
            self._default_beat_at is not None
            and now - self._default_beat_at < HEARTBEAT_MIN_INTERVAL_S
        ):
            return
        else:
            with self.connection.pipeline(transaction=False) as pipe:
                super().heartbeat(pipeline=pipe)
                pipe.execute()
        self._default_beat_at = now

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """A failed delivery is logged by its job in one line (`callback failed: ...`); RQ's
        traceback of it would add a dozen lines to every attempt and nothing else."""
        if len(exc_info) > 1 and isinstance(exc_info[1], DeliveryFailed) and not self._exc_handlers:
            return
        super().handle_exception(job, *exc_info)

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop with this worker's context bound, for its jobs and failure callbacks."""
        if self.context is None:
            raise RuntimeError(f"{self.name}: ASRWorker.work needs a WorkerContext")
        with bound(self.context):
            return bool(super().work(*args, **kwargs))

    def execute_job(self, job: Job, queue: Queue) -> None:
        began = time.monotonic()
        try:
            super().execute_job(job, queue)
            if job.func_name != JOB_FUNC:  # a callback delivery: no audio, no throughput
                return
            began = self._record_busy(began, job.id)
            for job_id in job_queue.claimed(self.connection, self.name):
                try:
                    claimed = self.job_class.fetch(
                        job_id, connection=self.connection, serializer=self.serializer
                    )
                except NoSuchJobError:  # deleted while it waited in the batch
                    job_queue.unclaim(self.connection, self.name, job_id)
                    continue
                super().execute_job(claimed, queue)
                began = self._record_busy(began, job_id)
        finally:
            if self.context is not None:
                self.context.batch.clear()

    def _record_busy(self, began: float, task_id: str) -> float:
        """Worker time since the previous job ended, with the job's audio: a batch's pass is
        shared by its jobs, so the estimated wait follows the throughput actually observed."""
        now = time.monotonic()
        record = task_store.load(self.connection, task_id)
        audio = (record.duration or record.audio_duration or 0.0) if record else 0.0
        stats.record_job(self.connection, now - began, audio)
        return now

    def prepare_execution(self, job: Job) -> Execution:
        """RQ's prepare_execution (rq.executions), plus this process's identity for the
        execution in the same transaction: no instant exists where the job is started but
        its owner unknown."""
        with self.connection.pipeline() as pipe:
            ttl = self.get_heartbeat_ttl(job)
            self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
            pipe.set(execution_owner_key(self.execution.id), self.owner.to_json(), ex=ttl)
            job_queue.started(pipe, job.id)
            self.set_state(WorkerStatus.BUSY, pipeline=pipe)
            pipe.execute()
        return self.execution

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        # Now in the started registry: the abandoned-job sweep covers it from here on.
        job_queue.unclaim(self.connection, self.name, job.id)


class Readiness(threading.Thread):
    """Publishes `asr:worker:{name}` (TTL 15 s) while the model is loaded; /health reads it.

    The same beat sweeps for jobs whose worker died (src/queue/recovery.py), so a killed worker's
    job is running again within seconds, not after RQ's registry expiry.
    """

    def __init__(
        self,
        conn: redis.Redis,
        worker: ASRWorker,
        engine: Engine,
        settings: Settings,
    ) -> None:
        super().__init__(name="readiness", daemon=True)
        self.conn = conn
        self.worker = worker
        self.engine = engine
        self.lanes = get_lanes(conn, settings)
        self.settings = settings
        self.stopped = threading.Event()
        self.started_at = datetime.now(UTC).isoformat()

    def payload(self) -> str:
        return json.dumps(
            {
                "name": self.worker.name,
                "incarnation": self.worker.owner.incarnation,
                "pid": os.getpid(),
                "hostname": socket.gethostname(),
                "model_loaded": True,
                "device": self.engine.info.device,
                "gpu": self.engine.info.gpu,
                "models": self.engine.info.models,
                "load_time": self.engine.info.load_time,
                "started_at": self.started_at,
                "current_task": self.worker.get_current_job_id(),
            }
        )

    def publish(self) -> None:
        job_queue.publish_readiness(self.conn, self.worker.name, self.payload(), READINESS_TTL_S)

    def sweep(self) -> None:
        """Requeue abandoned jobs, promote jobs that waited long enough, count the backlog; one
        worker at a time sweeps (a short Redis lock)."""
        if self.conn.set(SWEEP_LOCK_KEY, self.worker.name, nx=True, ex=READINESS_INTERVAL_S):
            requeue_everywhere(self.conn, self.settings)
            promoted = job_queue.promote(self.conn, self.lanes, self.settings.lane_promote_seconds)
            for task_id, lane in promoted:
                logger.info(f"task={task_id} promoted to the {lane.value} lane after its wait")
            job_queue.refresh_backlog(self.conn, self.lanes)
            job_queue.release_due_callbacks(self.conn, self.settings)
            for name in job_queue.claimers(self.conn):
                if name != self.worker.name and not worker_alive(self.conn, name):
                    return_claimed(self.conn, self.lanes, name)

    def run(self) -> None:
        unreachable = False
        while not self.stopped.is_set():
            try:
                self.publish()
                if unreachable:  # deaths during the outage are not the jobs' fault
                    note_redis_outage(self.conn, time.time())
                    unreachable = False
                self.sweep()
            except REDIS_ERRORS as exc:
                unreachable = True
                logger.warning(f"{self.worker.name} readiness not published: {exc}")
            except Exception:  # the beacon must outlive any one bad sweep
                logger.exception(f"{self.worker.name} sweep for abandoned jobs failed")
            self.stopped.wait(READINESS_INTERVAL_S)

    def stop(self) -> None:
        self.stopped.set()
        try:
            job_queue.withdraw_readiness(self.conn, self.worker.name)
        except REDIS_ERRORS:
            logger.warning(f"{self.worker.name} could not withdraw readiness")


def clear_stale_registration(conn: redis.Redis, name: str) -> None:
    """Forget an earlier worker of this name whose process is gone (killed, crashed).

    RQ refuses to register a name that is still registered, and a killed worker's key lives for
    minutes; the supervisor restarts worker-N under the same name, so clean it up here.
    """
    key = ASRWorker.redis_worker_namespace_prefix + name
    if not conn.exists(key):
        return
    info = {decoded(k): decoded(v) for k, v in conn.hgetall(key).items()}
    if info.get("hostname") != socket.gethostname() or "death" in info:
        if "death" in info:
            conn.delete(key)
        return
    pid = int(info.get("pid", "0") or 0)
    if pid_alive(pid):
        raise SystemExit(f"a worker named {name} is already running (pid {pid})")
    stale = ASRWorker.find_by_key(key, connection=conn)
    if stale is not None:
        unregister(stale)
    conn.delete(key)
    logger.warning(f"{name}: removed the registration left by dead pid {pid}")


def release_freed_heap() -> str:
    """Hand the heap freed during model load back to the OS; returns 'before -> after' RSS.

    Loading the full-size model leaves about 1.9 GB of freed-but-kept glibc heap (checkpoint
    buffers, state-dict copies): RSS 3.9 GB before malloc_trim(0), 2.0 GB after.
    """
    before = _rss_mb()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        return f"{before} MB"
    return f"{before} -> {_rss_mb()} MB"


def _rss_mb() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20
    except (OSError, ValueError):
        return 0


def wait_for_redis(conn: redis.Redis, name: str, max_delay: float = 10) -> float:
    """Block until Redis answers, so a worker started during an outage keeps its loaded model
    instead of exiting and loading it again; returns the seconds waited."""
    delay = 0.5
    began = time.monotonic()
    while True:
        try:
            conn.ping()
            return time.monotonic() - began
        except REDIS_ERRORS as exc:
            logger.warning(f"{name} waiting for Redis: {type(exc).__name__}; retry in {delay:.1f}s")
            time.sleep(delay)
            delay = min(delay * 2, max_delay)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="ASR worker: loads the model once, serves RQ.")
    parser.add_argument(
        "--name", default=os.environ.get("ASR_WORKER_NAME") or f"worker-{os.getpid()}"
    )
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, settings: Settings | None = None) -> int:
    """Load the model once, then serve jobs with a context holding these settings (or the
    environment's); the settings given here are the ones the jobs run with."""
    args = parse_args(argv)
    settings = settings or get_settings()
    name = args.name
    setup_logging(settings, "worker", name)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "<all>")
    logger.info(f"{name} starting: device={settings.device} CUDA_VISIBLE_DEVICES={visible}")
    started = time.perf_counter()
    # "loading" in /health from now on, and the reason while the engine cannot load (no models)
    start = StartBeacon(api_connection(settings), name, READINESS_INTERVAL_S, READINESS_TTL_S)
    engine = load_when_possible(settings, name, start.begin())
    context = WorkerContext(settings=settings, engine=engine, name=name)
    logger.info(
        f"{name} engine loaded on {engine.info.device} in {time.perf_counter() - started:.1f}s"
        f"; RSS {release_freed_heap()}"
    )

    # Wait on a connection of its own: RQ's Worker sends CLIENT SETNAME when it is created, and
    # it raises the pool's socket timeout above its BLPOP timeout, which connections opened
    # before it would not get (the idle worker would quit with "Redis connection timeout").
    probe = api_connection(settings)
    waited = wait_for_redis(probe, name)
    probe.close()
    conn = worker_connection(settings)
    lanes = get_lanes(conn, settings)
    worker = ASRWorker(job_queue.worker_queues(conn, settings), connection=conn, context=context)
    clear_stale_registration(conn, name)
    readiness = Readiness(api_connection(settings), worker, engine, settings)
    readiness.publish()
    start.stop()  # only now: /health always sees the worker in one of its two states
    if waited > 1:
        note_redis_outage(conn, time.time())
    # At once, not after the first beat: a restarted worker-N requeues the job its predecessor
    # died in (the one-worker box has nobody else to do it).
    requeue_everywhere(conn, settings)
    return_claimed(conn, lanes, name)  # left by this name's last process
    for queue in lanes.ordered():
        if moved := job_queue.migrate_legacy_jobs(queue):
            logger.warning(f"{name} pointed {len(moved)} jobs of an earlier release at {JOB_FUNC}")
    if released := recordings.release_unpinned(conn):
        logger.info(f"{name} released {released} finished recordings for retention (older release)")
    readiness.start()
    try:
        worker.work(with_scheduler=False, logging_level=settings.log_level, burst=args.burst)
    finally:
        readiness.stop()
        logger.info(f"{name} stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
