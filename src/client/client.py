"""The sync and async clients. Both build requests and read answers with the same helpers, so
they cannot drift apart; only the I/O differs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
from websockets.asyncio.client import connect as aconnect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.sync.client import connect

from src.client.models import ASRError, HistoryItem, ServiceUnavailable, Task

PREFIX = "/api/v1/asr"
# The server's longest long poll; a wait is split into polls of at most this.
MAX_POLL_S = 60.0
# Close codes from the server: 4000 + the HTTP status its twin would answer, 1013 for an outage.
WS_UNAVAILABLE = 1013
Audio = bytes | str | Path | BinaryIO
# What fails to open a WebSocket where a long poll would still work (a proxy, an old server).
WS_UNUSABLE = (OSError, InvalidHandshake, TimeoutError)


def _headers(api_key: str | None) -> dict[str, str]:
    return {"X-API-Key": api_key} if api_key else {}


def _upload(
    audio: Audio,
    filename: str | None,
    language: str,
    hotwords: list[str] | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """httpx keyword arguments for submit."""
    if isinstance(audio, str | Path):
        path = Path(audio)
        content: bytes | BinaryIO = path.read_bytes()
        filename = filename or path.name
    else:
        content = audio
    data: dict[str, str] = {"language": language}
    if hotwords:
        data["hotwords"] = " ".join(hotwords)
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    return {"files": {"audio": (filename or "audio", content)}, "data": data, "headers": headers}


def _checked(resp: httpx.Response) -> Any:
    """The JSON body, or the service's error raised as `ASRError`."""
    if resp.status_code < 400:
        return resp.json()
    try:
        body = resp.json()
    except ValueError:
        body = {"error": resp.text[:200]}
    if not isinstance(body, dict):
        body = {"error": str(body)}
    error = ServiceUnavailable if resp.status_code == 503 else ASRError
    raise error(resp.status_code, body)


def _closed(code: int | None, reason: str) -> ASRError:
    """The error a WebSocket closed before the final state stands for."""
    if code == WS_UNAVAILABLE:
        return ServiceUnavailable(503, {"error": reason})
    status = code - 4000 if code is not None and 4000 <= code < 5000 else 502
    return ASRError(status, {"error": reason or f"WebSocket closed ({code})"})


def _ws_url(base_url: str, task_id: str) -> str:
    url = base_url.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
    return f"{url}{PREFIX}/ws/{task_id}"


class ASRClient:
    """Blocking client. Pass `http` to reuse an `httpx.Client` (its base URL is then used)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self._http.headers.update(_headers(api_key))

    def __enter__(self) -> ASRClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        audio: Audio,
        *,
        filename: str | None = None,
        language: str = "zh",
        hotwords: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Upload a recording; the answer is `queued` (or `done` at once from the cache)."""
        upload = _upload(audio, filename, language, hotwords, idempotency_key)
        return Task.model_validate(_checked(self._http.post(f"{PREFIX}/submit", **upload)))

    def result(self, task_id: str, *, wait: float = 0) -> Task:
        """The task's state; with `wait` (≤ 60 s), once it is settled or when the wait ends."""
        params = {"wait": wait} if wait else None
        resp = self._http.get(f"{PREFIX}/result/{task_id}", params=params, timeout=wait + 30)
        return Task.model_validate(_checked(resp))

    def wait(self, task_id: str, *, timeout: float = 300.0, websocket: bool = True) -> Task:
        """The task once done or failed, or its state when `timeout` runs out: pushed over the
        WebSocket, or by long polls where a WebSocket cannot be opened."""
        deadline = time.monotonic() + timeout
        if websocket:
            try:
                states = list(self._follow(task_id, timeout))
                if states and states[-1].settled:
                    return states[-1]
            except WS_UNUSABLE:
                pass  # no WebSocket on this path: long polls below
        while True:
            left = deadline - time.monotonic()
            task = self.result(task_id, wait=max(0.0, min(left, MAX_POLL_S)))
            if task.settled or left <= MAX_POLL_S:
                return task

    def follow(self, task_id: str, *, timeout: float = 300.0) -> Iterator[Task]:
        """Every state the task goes through, from now until done or failed (or `timeout`).
        Raises `ASRError` (404: unknown or deleted task) and `ServiceUnavailable`."""
        return self._follow(task_id, timeout)

    def _follow(self, task_id: str, timeout: float) -> Iterator[Task]:
        url = _ws_url(self.base_url, task_id)
        deadline = time.monotonic() + timeout
        with connect(url, additional_headers=_headers(self.api_key), open_timeout=10) as ws:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    raw = ws.recv(timeout=left)
                except TimeoutError:
                    return
                except ConnectionClosed as exc:
                    raise _closed(exc.rcvd.code if exc.rcvd else None, _reason(exc)) from None
                task = Task.model_validate(json.loads(raw))
                yield task
                if task.settled:
                    return

    def retry(self, task_id: str) -> Task:
        """Run a failed task again."""
        return Task.model_validate(_checked(self._http.post(f"{PREFIX}/retry/{task_id}")))

    def delete(self, task_id: str) -> bool:
        """Delete the task and its recording; True when the recording was deleted too."""
        body = _checked(self._http.delete(f"{PREFIX}/task/{task_id}"))
        return bool(body.get("recording_deleted"))

    def history(self, limit: int = 10) -> list[HistoryItem]:
        body = _checked(self._http.get(f"{PREFIX}/history", params={"limit": limit}))
        return [HistoryItem.model_validate(r) for r in body["records"]]


class AsyncASRClient:
    """The same as `ASRClient`, for asyncio (aiogram, python-telegram-bot)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        api_key: str | None = None,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self._http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._http.headers.update(_headers(api_key))

    async def __aenter__(self) -> AsyncASRClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        audio: Audio,
        *,
        filename: str | None = None,
        language: str = "zh",
        hotwords: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        upload = _upload(audio, filename, language, hotwords, idempotency_key)
        return Task.model_validate(_checked(await self._http.post(f"{PREFIX}/submit", **upload)))

    async def result(self, task_id: str, *, wait: float = 0) -> Task:
        params = {"wait": wait} if wait else None
        resp = await self._http.get(f"{PREFIX}/result/{task_id}", params=params, timeout=wait + 30)
        return Task.model_validate(_checked(resp))

    async def wait(self, task_id: str, *, timeout: float = 300.0, websocket: bool = True) -> Task:
        deadline = time.monotonic() + timeout
        if websocket:
            try:
                states = [state async for state in self.follow(task_id, timeout=timeout)]
                if states and states[-1].settled:
                    return states[-1]
            except WS_UNUSABLE:
                pass
        while True:
            left = deadline - time.monotonic()
            task = await self.result(task_id, wait=max(0.0, min(left, MAX_POLL_S)))
            if task.settled or left <= MAX_POLL_S:
                return task

    async def follow(self, task_id: str, *, timeout: float = 300.0) -> AsyncIterator[Task]:
        url = _ws_url(self.base_url, task_id)
        deadline = time.monotonic() + timeout
        async with aconnect(url, additional_headers=_headers(self.api_key), open_timeout=10) as ws:
            while (left := deadline - time.monotonic()) > 0:
                try:
                    raw = await _recv(ws, left)
                except ConnectionClosed as exc:
                    raise _closed(exc.rcvd.code if exc.rcvd else None, _reason(exc)) from None
                if raw is None:
                    return
                task = Task.model_validate(json.loads(raw))
                yield task
                if task.settled:
                    return

    async def retry(self, task_id: str) -> Task:
        return Task.model_validate(_checked(await self._http.post(f"{PREFIX}/retry/{task_id}")))

    async def delete(self, task_id: str) -> bool:
        body = _checked(await self._http.delete(f"{PREFIX}/task/{task_id}"))
        return bool(body.get("recording_deleted"))

    async def history(self, limit: int = 10) -> list[HistoryItem]:
        body = _checked(await self._http.get(f"{PREFIX}/history", params={"limit": limit}))
        return [HistoryItem.model_validate(r) for r in body["records"]]


def _reason(exc: ConnectionClosed) -> str:
    return exc.rcvd.reason if exc.rcvd else ""


async def _recv(ws: Any, timeout_s: float) -> str | bytes | None:
    """The next message, or None when `timeout_s` runs out first."""
    try:
        return await asyncio.wait_for(ws.recv(), timeout_s)
    except TimeoutError:
        return None
