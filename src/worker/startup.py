"""A worker's start: load the engine, and while it cannot, say why and try again.

On a first run nothing is downloaded yet, and the engine cannot load. The worker used to exit
with a traceback; the supervisor restarted it every 1-30 s, each time with another traceback,
and /health said "Models are still loading..." although nothing was. Now the worker stays up:
it logs the reason once, in one line, publishes it (`asr:worker-start:{name}`, read by /health
per worker), and tries again after 1 s, 2 s, 4 s ... up to WORKER_START_RETRY_SECONDS.

Waiting beats exiting with back-off here: a restart cannot make a missing file appear, a retry
in the same process costs the ASR engine a few stat() calls, the log gets one line per reason
instead of a traceback per restart, and the worker becomes ready by itself once the files are
there (scripts/download_models.py finished, a directory copied in), with no restart by hand.
The wait is generic to the engine seam: any exception from `load_engine` is a reason, shown
as its message; the worker never needs to know what an engine's models are.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from loguru import logger

from src.config import Settings
from src.engine.interface import Engine, load_engine
from src.records import worker_start
from src.records.redis_client import REDIS_ERRORS
from src.records.worker_start import WorkerStart

FIRST_RETRY_S = 1.0


class StartBeacon(threading.Thread):
    """Publishes the worker's start state until its readiness beacon takes over.

    Refreshed every `interval_s` with a TTL of `ttl_s`, as the readiness beacon is, so a worker
    killed while it waits disappears from /health by itself. A change of state is published at
    once, except the start of a retry: a try that fails in milliseconds must not make /health
    flicker to "loading"; a real load shows up with the next beat.
    """

    def __init__(self, conn: redis.Redis, name: str, interval_s: float, ttl_s: int) -> None:
        super().__init__(name="start-beacon", daemon=True)
        self.conn = conn
        self.interval_s = interval_s
        self.ttl_s = ttl_s
        self.stopped = threading.Event()
        self.unreachable = False
        self.state = WorkerStart(
            name=name,
            state="loading",
            since=datetime.now(UTC),
            pid=os.getpid(),
            hostname=socket.gethostname(),
        )

    def begin(self) -> StartBeacon:
        self.publish()
        self.start()
        return self

    def update(self, *, publish: bool, **changes: object) -> None:
        self.state = self.state.model_copy(
            update=changes
        )  # one assignment: the beat sees old or new
        if publish:
            self.publish()

    def publish(self) -> None:
        try:
            worker_start.publish(self.conn, self.state, self.ttl_s)
        except REDIS_ERRORS as exc:
            if not self.unreachable:  # once per outage: the start must not flood the log
                logger.warning(f"{self.state.name} start state not published: {exc}")
            self.unreachable = True
        else:
            self.unreachable = False

    def run(self) -> None:
        while not self.stopped.wait(self.interval_s):
            self.publish()

    def stop(self) -> None:
        """Stop refreshing and withdraw the state (the worker is ready, or leaving)."""
        self.stopped.set()
        if self.is_alive():
            self.join(timeout=5)
        try:
            worker_start.withdraw(self.conn, self.state.name)
        except REDIS_ERRORS:
            logger.warning(f"{self.state.name} start state not withdrawn; it expires by itself")


def reason(exc: Exception) -> str:
    """The message /health shows. File errors (a missing model) explain themselves; for
    anything else the exception's type helps."""
    text = str(exc)
    if isinstance(exc, OSError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_when_possible(
    settings: Settings,
    name: str,
    beacon: StartBeacon,
    sleep: Callable[[float], None] = time.sleep,
) -> Engine:
    """`load_engine`, retried with back-off while it raises; the beacon says why meanwhile."""
    cap = settings.worker_start_retry_seconds
    delay = min(FIRST_RETRY_S, cap)
    last = ""
    attempts = 1
    try:
        while True:
            try:
                return load_engine(settings)
            except Exception as exc:
                why = reason(exc)
                retry_at = datetime.now(UTC) + timedelta(seconds=delay)
                beacon.update(publish=True, state="failed", error=why, retry_at=retry_at)
                if why != last:
                    logger.warning(
                        f"{name} cannot load its engine: {why} "
                        f"(trying again every {cap:g}s at most; no restart needed)"
                    )
                    if not isinstance(exc, OSError):  # unexpected: keep the trace, below INFO
                        logger.opt(exception=exc).debug(f"{name} engine load failed")
                else:
                    logger.debug(f"{name} still cannot load its engine (try {attempts}): {why}")
                last = why
            sleep(delay)
            delay = min(delay * 2, cap)
            attempts += 1
            beacon.update(publish=False, state="loading", attempts=attempts, retry_at=None)
    except BaseException:  # Ctrl-C or an exit while waiting: leave /health at once
        beacon.stop()
        raise
