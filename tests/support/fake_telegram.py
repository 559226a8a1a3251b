"""A local fake of Telegram's Bot API server, for driving the real python-telegram-bot.

It speaks the Bot API's HTTP protocol on a loopback port: `POST /bot<token>/<method>` with
form or JSON parameters, answered `{"ok": true, "result": ...}`, and file downloads under
`/file/bot<token>/<file_path>`. It serves the methods the bot uses (getMe, getUpdates with long
polling, getFile, sendMessage, editMessageText, answerCallbackQuery, setWebhook, deleteWebhook
...) and records every call, so a test can push updates in and read what the bot did.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.support.processes import free_port, wait_for

BOT_USER = {"id": 700000001, "is_bot": True, "first_name": "ASR test bot", "username": "asr_bot"}
USER = {"id": 1001, "is_bot": False, "first_name": "Tester"}


@dataclass
class Call:
    """One request the bot made: the method, its parameters, and when (monotonic seconds)."""

    method: str
    params: dict[str, Any]
    at: float = field(default_factory=time.monotonic)
    result: Any = None


def _value(raw: str) -> Any:
    """PTB sends each form field JSON-encoded when it is not a plain string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class FakeTelegram:
    """The fake Bot API server, run by uvicorn in a thread of the test process."""

    def __init__(self, token: str = "123456:TEST-token") -> None:
        self.token = token
        self.port = free_port()
        self.calls: list[Call] = []
        self.files: dict[str, tuple[bytes, str]] = {}  # file_id -> (bytes, file_path)
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(5000)
        self._lock = threading.Lock()
        self._server = uvicorn.Server(
            uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="warning")
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    def start(self) -> FakeTelegram:
        self._thread.start()
        wait_for(lambda: self._server.started, 10, 0.05, "the fake Bot API server")
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    # -- what a test does ------------------------------------------------------------------

    def add_file(self, file_id: str, data: bytes, file_path: str) -> None:
        self.files[file_id] = (data, file_path)

    def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update for getUpdates (an update_id is given if it has none)."""
        update.setdefault("update_id", next(self._update_ids))
        with self._lock:
            self._updates.append(update)
        return update

    def message_update(self, chat_id: int, **content: Any) -> dict[str, Any]:
        """An update with a user's message in a private chat (`content`: voice=..., text=...)."""
        message = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": "Tester"},
            "from": USER,
            **content,
        }
        if str(content.get("text", "")).startswith("/"):
            command = content["text"].split()[0]
            message["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return {"update_id": next(self._update_ids), "message": message}

    def press(self, message: dict[str, Any], data: str) -> dict[str, Any]:
        """An update: the user pressed an inline button of the bot's `message`."""
        query = {"id": str(next(self._message_ids)), "from": USER, "chat_instance": "1"}
        query.update(message=message, data=data)
        return {"update_id": next(self._update_ids), "callback_query": query}

    def of(self, method: str, chat_id: int | None = None) -> list[Call]:
        return [
            c
            for c in list(self.calls)
            if c.method == method and (chat_id is None or _int(c.params.get("chat_id")) == chat_id)
        ]

    def wait(self, check: Callable[[], Any], timeout: float = 120, what: str = "") -> Any:
        return wait_for(check, timeout, 0.05, what)

    # -- the server --------------------------------------------------------------------------

    def _app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/bot{token}/{method}", self._method, methods=["GET", "POST"]),
                Route("/file/bot{token}/{path:path}", self._download, methods=["GET"]),
            ]
        )

    async def _params(self, request: Request) -> dict[str, Any]:
        if request.headers.get("content-type", "").startswith("application/json"):
            body = await request.body()
            return json.loads(body) if body else {}
        form = await request.form()
        return {k: _value(v) for k, v in form.items() if isinstance(v, str)}

    async def _method(self, request: Request) -> Response:
        if request.path_params["token"] != self.token:
            return JSONResponse({"ok": False, "error_code": 401, "description": "Unauthorized"})
        method = request.path_params["method"]
        params = await self._params(request)
        call = Call(method, params)
        self.calls.append(call)
        handler = getattr(self, f"_m_{method}", None)
        call.result = await handler(params) if handler else True
        if isinstance(call.result, Response):
            return call.result
        return JSONResponse({"ok": True, "result": call.result})

    async def _download(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.calls.append(Call("download", {"path": path}))
        for data, file_path in self.files.values():
            if file_path == path and request.path_params["token"] == self.token:
                return Response(data, media_type="application/octet-stream")
        return Response(status_code=404)

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        deadline = time.monotonic() + float(params.get("timeout") or 0)
        while True:
            with self._lock:
                self._updates = [u for u in self._updates if u["update_id"] >= offset]
                ready = list(self._updates)
            if ready or time.monotonic() >= deadline:
                return ready
            await asyncio.sleep(0.05)

    async def _m_getFile(self, params: dict[str, Any]) -> Any:
        file_id = params["file_id"]
        if file_id not in self.files:
            return JSONResponse(
                {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"}
            )
        data, file_path = self.files[file_id]
        return {
            "file_id": file_id,
            "file_unique_id": f"u-{file_id}",
            "file_size": len(data),
            "file_path": file_path,
        }

    def _message(self, params: dict[str, Any], message_id: int | None = None) -> dict[str, Any]:
        message = {
            "message_id": message_id or next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": _int(params["chat_id"]), "type": "private", "first_name": "Tester"},
            "from": BOT_USER,
            "text": params["text"],
        }
        if params.get("reply_markup"):
            message["reply_markup"] = params["reply_markup"]
        return message

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        return self._message(params)

    async def _m_editMessageText(self, params: dict[str, Any]) -> Any:
        return self._message(params, _int(params["message_id"]))


def _int(value: Any) -> int | None:
    return int(value) if value is not None else None
