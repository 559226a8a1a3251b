"""Push instead of polling: one pub/sub subscription per API process, fanned out to its waiters.

A WebSocket or a long poll registers a `Watch` on its task and sleeps until the hub wakes it;
it then reads the task once (the record is the truth, an event is only a nudge). Nothing polls
Redis per waiter. Two kinds of wake-up:

- the task's own events (status, stage, progress, deletion);
- for a waiter that asked for it, any other task's status change, since that may move its
  place in line (a job started, finished or went back to the queue). Progress ticks don't.

When the subscription drops (Redis restart or outage) the hub wakes every waiter once it is
subscribed again, because events sent meanwhile are gone: each waiter reads its task afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import redis.asyncio
from loguru import logger

from src.records.events import EVENTS_CHANNEL, TaskEvent, parse
from src.records.redis_client import REDIS_ERRORS

RESUBSCRIBE_FIRST_S = 0.25
RESUBSCRIBE_MAX_S = 5.0
# How long one read of the subscription waits for a message; bounds how soon `stop` is seen.
LISTEN_S = 1.0

T = TypeVar("T")
# What a dropped or stalled subscription raises.
LOST: tuple[type[BaseException], ...] = (*REDIS_ERRORS, OSError, TimeoutError)


class Watch:
    """One waiter's doorbell: set by the hub, cleared by the waiter when it reads the task."""

    def __init__(self, task_id: str, queue_moves: bool) -> None:
        self.task_id = task_id
        self.queue_moves = queue_moves
        self._rung = asyncio.Event()

    def ring(self) -> None:
        self._rung.set()

    async def wait(self, timeout_s: float | None) -> bool:
        """True when rung within `timeout_s` (None: however long it takes), False on timeout;
        either way it is ready to be rung again."""
        try:
            await asyncio.wait_for(self._rung.wait(), timeout_s)
        except TimeoutError:
            return False
        self._rung.clear()
        return True


class EventHub:
    """Relays `asr:events` to the watches of this process; `run` it as a background task."""

    def __init__(self, aconn: redis.asyncio.Redis) -> None:
        self._aconn = aconn
        self._watches: dict[str, set[Watch]] = {}
        self._queue_watches: set[Watch] = set()
        self.subscribed = asyncio.Event()
        self.received = 0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask `run` to return within `LISTEN_S`. Cancel it too, for an immediate stop; but the
        flag is what counts, since redis-py's read with a timeout can swallow a cancellation."""
        self._stop.set()

    @contextlib.contextmanager
    def watch(self, task_id: str, *, queue_moves: bool = False) -> Iterator[Watch]:
        """Register before the first read of the task, so no change can fall in between."""
        w = Watch(task_id, queue_moves)
        self._watches.setdefault(task_id, set()).add(w)
        if queue_moves:
            self._queue_watches.add(w)
        try:
            yield w
        finally:
            peers = self._watches.get(task_id)
            if peers is not None:
                peers.discard(w)
                if not peers:
                    del self._watches[task_id]
            self._queue_watches.discard(w)

    @property
    def waiters(self) -> int:
        return sum(len(peers) for peers in self._watches.values())

    def dispatch(self, event: TaskEvent) -> None:
        for w in self._watches.get(event.task_id, ()):
            w.ring()
        if event.change != "progress":
            for w in self._queue_watches:
                if w.task_id != event.task_id:
                    w.ring()

    def _ring_all(self) -> None:
        for peers in self._watches.values():
            for w in peers:
                w.ring()

    async def run(self) -> None:
        """Subscribe, relay, and subscribe again with back-off whenever the connection drops,
        until `stop`."""
        delay = RESUBSCRIBE_FIRST_S
        while not self._stop.is_set():
            try:
                async with self._aconn.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(EVENTS_CHANNEL)
                    self.subscribed.set()
                    self._ring_all()  # anything sent while we were not listening is lost
                    delay = RESUBSCRIBE_FIRST_S
                    while not self._stop.is_set():
                        message = await pubsub.get_message(timeout=LISTEN_S)
                        if message is None or message.get("type") != "message":
                            continue
                        self.received += 1
                        if (event := parse(message["data"])) is not None:
                            self.dispatch(event)
            except LOST as exc:
                if self.subscribed.is_set():
                    logger.warning(f"Event subscription lost ({type(exc).__name__}); retrying")
                self.subscribed.clear()
                self._ring_all()  # waiters read now, and answer 503 if Redis is away
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                delay = min(delay * 2, RESUBSCRIBE_MAX_S)
        self.subscribed.clear()


async def until_settled(
    watch: Watch,
    read: Callable[[], Awaitable[T]],
    settled: Callable[[T], bool],
    timeout_s: float,
) -> T:
    """Read, then read again on each ring, until `settled`; at `timeout_s`, the state then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    state = await read()
    while not settled(state):
        left = deadline - loop.time()
        if left <= 0:
            break
        if not await watch.wait(left):
            return await read()  # the state at the end of the wait, as promised
        state = await read()
    return state
