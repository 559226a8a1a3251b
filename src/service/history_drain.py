"""The API host's side of the history outbox (src/results/history.py): workers on other hosts
push their lines to Redis, and the API appends them to its JSONL file, the one operators read."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

import redis
from anyio import to_thread
from loguru import logger

from src.results import history

# How often the outbox is emptied: the file trails Redis by about this much.
DRAIN_INTERVAL_S = 1.0


async def drain_forever(conn: redis.Redis, path: Path, stopped: asyncio.Event) -> None:
    """Drain every DRAIN_INTERVAL_S until `stopped`, then once more (a line pushed during the
    shutdown is not left for the next start). File and Redis calls run in a thread."""
    holder = f"{socket.gethostname()}:{os.getpid()}"
    while True:
        last = stopped.is_set()
        try:
            await to_thread.run_sync(history.drain_outbox, conn, path, holder)
        except redis.RedisError as exc:
            logger.warning(f"history outbox not drained: {exc}")
        if last:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), DRAIN_INTERVAL_S)
