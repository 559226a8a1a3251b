"""Serving a WebSocket that only talks: relay updates, and notice when the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

from fastapi import WebSocket
from pydantic import BaseModel

T = TypeVar("T")


async def until_disconnect(
    websocket: WebSocket, updates: AsyncIterator[T], shape: Callable[[T], BaseModel]
) -> bool:
    """Send each update as JSON until they end (True) or the client goes away (False).

    The client's side is read at the same time, so a client that leaves while nothing changes
    frees its watch at once instead of at the next change. Errors from `updates` propagate.
    """

    async def send_all() -> None:
        async for item in updates:
            await websocket.send_text(shape(item).model_dump_json(exclude_none=True))

    async def until_gone() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # what a client sends is not read: this socket only talks

    sender = asyncio.create_task(send_all())
    listener = asyncio.create_task(until_gone())
    done, pending = await asyncio.wait({sender, listener}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if sender in done:
        sender.result()  # raises what `updates` raised
        return True
    return False
