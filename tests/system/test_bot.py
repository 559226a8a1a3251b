"""The reference Telegram bot (src/bot) end to end: the real python-telegram-bot, unmodified, in
its own process (`python -m src.bot`, as scripts/bot.sh runs it), talking to a local fake Bot API
server (tests/support/fake_telegram.py) and to the real service: uvicorn, RQ worker processes on
the tiny FunASR models, a private Redis."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from src.client import ASRClient, Task
from tests.support.audio_samples import SPEECH_OGG, SPEECH_WAV, make_long
from tests.support.fake_telegram import Call, FakeTelegram
from tests.support.fixtures import Env
from tests.support.processes import ApiProcess, BotProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

KEY = "bot-live-key"
SECRET = "hook-secret-123"
EDIT_INTERVAL_S = 1.0


class Stack:
    """The service, the fake Bot API and the polling bot, for this module."""

    def __init__(self, env: Env, api: ApiProcess, fake: FakeTelegram, bot: BotProcess) -> None:
        self.env = env
        self.api = api
        self.fake = fake
        self.bot = bot

    def bot_settings(self, **extra: str) -> dict[str, str]:
        return {
            "BOT_TOKEN": self.fake.token,
            "BOT_SERVICE_URL": self.api.url,
            "BOT_SERVICE_API_KEY": KEY,
            "BOT_API_BASE_URL": self.fake.base_url,
            "BOT_API_FILE_URL": self.fake.file_url,
            "BOT_EDIT_INTERVAL_S": str(EDIT_INTERVAL_S),
            "BOT_MAX_ACTIVE_JOBS": "1",
            **extra,
        }

    def history(self) -> list[Any]:
        with ASRClient(self.api.url, api_key=KEY) as asr:
            return asr.history(100)

    def latest(self) -> Task:
        """The service's newest task, as /result gives it."""
        with ASRClient(self.api.url, api_key=KEY) as asr:
            return asr.result(asr.history(1)[0].task_id)


@pytest.fixture(scope="module")
def stack(fenv: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("bot-logs")
    fenv.worker("bot-worker-1").wait_ready(fenv.conn())
    api = ApiProcess(fenv.env(API_KEY=KEY), logs / "uvicorn.out").start("/api/v1/health")
    fake = FakeTelegram().start()
    stack = Stack(fenv, api, fake, BotProcess({}, logs / "bot.out"))
    stack.bot = BotProcess(stack.bot_settings(BOT_MODE="polling"), logs / "bot.out").start()
    try:
        fake.wait(lambda: stack.bot.alive() and fake.of("getUpdates"), 60, "the bot polling")
        yield stack
    finally:
        stack.bot.stop()
        fake.stop()
        api.stop()


class Chat:
    """One private chat with the bot, as the fake server saw it."""

    def __init__(self, fake: FakeTelegram, chat_id: int) -> None:
        self.fake = fake
        self.chat_id = chat_id

    def send(self, **content: Any) -> dict[str, Any]:
        return self.fake.push(self.fake.message_update(self.chat_id, **content))["message"]

    def sent(self) -> list[Call]:
        return [c for c in self.fake.of("sendMessage", self.chat_id) if c.result is not None]

    def edits(self, message_id: int | None = None) -> list[Call]:
        return [
            c
            for c in self.fake.of("editMessageText", self.chat_id)
            if message_id is None or int(c.params["message_id"]) == message_id
        ]

    def replies_to(self, message_id: int) -> list[Call]:
        return [c for c in self.sent() if replied_to(c) == message_id]

    def status_of(self, message: dict[str, Any]) -> Call:
        """The bot's status message for the user's `message`."""
        found = self.fake.wait(
            lambda: next(iter(self.replies_to(message["message_id"])), None),
            30,
            f"the status message for {message['message_id']}",
        )
        return found  # type: ignore[no-any-return]

    def final(self, status: Call, since: int = 0, timeout: float = 120) -> Call:
        """The status message's last edit: done (✅) or failed (❌)."""

        def settled() -> Call | None:
            edits = self.edits(status.result["message_id"])[since:]
            return next((c for c in edits if c.params["text"][0] in "✅❌"), None)

        return self.fake.wait(settled, timeout, "the task to settle")  # type: ignore[no-any-return]


def replied_to(call: Call) -> int | None:
    reply = call.params.get("reply_parameters") or {}
    target = reply.get("message_id") or call.params.get("reply_to_message_id")
    return int(target) if target else None


def voice(fake: FakeTelegram, file_id: str, unique_id: str, data: bytes) -> dict[str, Any]:
    fake.add_file(file_id, data, f"voice/{file_id}.oga")
    size = len(data)
    return {"file_id": file_id, "file_unique_id": unique_id, "duration": 4, "file_size": size}


def transcript_of(chat: Chat, status: Call, parts: int = 1) -> list[str]:
    """The transcript replies to the status message, once `parts` of them are there."""
    message_id = status.result["message_id"]
    calls = chat.fake.wait(
        lambda: len(chat.replies_to(message_id)) >= parts and chat.replies_to(message_id),
        30,
        "the transcript",
    )
    return [c.params["text"] for c in calls]


def test_an_oversize_file_gets_a_clear_reply_and_no_download(stack: Stack):
    chat = Chat(stack.fake, 15)
    big = {"file_id": "big-1", "file_unique_id": "ubig1", "file_size": 25 * 1024 * 1024}
    message = chat.send(document={**big, "file_name": "meeting.mp3", "mime_type": "audio/mpeg"})
    reply = chat.status_of(message)
    assert "25.0 MB" in reply.params["text"] and "20 MB" in reply.params["text"]
    time.sleep(1)
    assert not [c for c in stack.fake.of("getFile") if c.params["file_id"] == "big-1"]
    assert len(chat.sent()) == 1 and not chat.edits()


def test_a_voice_note_is_transcribed_with_throttled_status_edits(
    stack: Stack, record_property: Any
):
    chat = Chat(stack.fake, 11)
    chat.send(text="/hotwords 张三, 李四")
    stack.fake.wait(lambda: chat.sent(), 30, "the hotwords reply")
    assert chat.sent()[0].params["text"] == "Hotwords for this chat: 张三, 李四"

    before = len(stack.history())
    sent_at = time.monotonic()
    message = chat.send(voice=voice(stack.fake, "voice-1", "uvoice1", SPEECH_OGG.read_bytes()))
    status = chat.status_of(message)
    assert status.params["text"].startswith("📥")
    final = chat.final(status)
    [text] = transcript_of(chat, status)
    record_property("voice_note_to_transcript_s", round(time.monotonic() - sent_at, 3))

    assert len(stack.history()) == before + 1
    newest = stack.latest()
    assert newest.status == "done" and text == newest.text and text  # the service's transcript
    raw = httpx.get(
        f"{stack.api.url}/api/v1/asr/result/{newest.task_id}", headers={"X-API-Key": KEY}
    )
    assert {"张三", "李四"} <= set(raw.json()["hotwords"])  # the chat's /hotwords went with it
    assert final.params["text"].startswith("✅ Done")
    edits = chat.edits(status.result["message_id"])
    shown = [c.params["text"] for c in edits]
    assert any(t.startswith(("⏳ Queued", "⚙️ Processing")) for t in shown), shown
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= EDIT_INTERVAL_S * 0.9 for gap in gaps), gaps
    assert [c.params["file_id"] for c in stack.fake.of("getFile")].count("voice-1") == 1

    earlier = len(chat.sent())
    chat.send(text="/history")
    stack.fake.wait(lambda: len(chat.sent()) > earlier, 30, "/history")
    newest_line = chat.sent()[earlier].params["text"].splitlines()[0]
    assert " success " in newest_line and text[:20] in newest_line


def test_a_forwarded_duplicate_is_answered_from_the_first_task(stack: Stack, record_property: Any):
    """The same file (one file_unique_id) forwarded into another chat: the bot sends the
    Idempotency-Key of the file, so the service answers with the task it already has."""
    first, second = Chat(stack.fake, 21), Chat(stack.fake, 22)
    note = voice(stack.fake, "voice-dup", "udup", SPEECH_OGG.read_bytes())
    status = first.status_of(first.send(voice=note))
    first.final(status)
    [text] = transcript_of(first, status)
    tasks = len(stack.history())

    started = time.monotonic()
    forwarded = second.send(
        voice=note,
        forward_origin={
            "type": "user",
            "date": 0,
            "sender_user": {"id": 9, "is_bot": False, "first_name": "X"},
        },
    )
    status2 = second.status_of(forwarded)
    final = second.final(status2, timeout=30)
    assert transcript_of(second, status2) == [text]
    elapsed = time.monotonic() - started
    record_property("duplicate_to_transcript_s", round(elapsed, 3))
    assert len(stack.history()) == tasks  # no second task: nothing was queued or transcribed
    assert [c.params["text"] for c in second.edits()] == [final.params["text"]]  # never queued
    assert elapsed < 5, elapsed


def test_a_long_transcript_comes_in_parts_and_the_chat_limit_holds(
    stack: Stack, tmp_path: Path, record_property: Any
):
    chat = Chat(stack.fake, 13)
    clip = make_long(SPEECH_WAV, tmp_path, seconds=700, fmt="ogg_opus").read_bytes()
    stack.fake.add_file("long-1", clip, "documents/long.ogg")
    doc = {"file_id": "long-1", "file_unique_id": "ulong1", "file_size": len(clip)}
    sent_at = time.monotonic()
    message = chat.send(document={**doc, "file_name": "lecture.ogg", "mime_type": "audio/ogg"})
    status = chat.status_of(message)

    # While it runs, a second recording in the same chat is over BOT_MAX_ACTIVE_JOBS=1.
    chat.fake.wait(lambda: chat.edits(status.result["message_id"]), 30, "the first status edit")
    extra = chat.send(voice=voice(stack.fake, "voice-13", "uv13", SPEECH_OGG.read_bytes()))
    refusal = chat.status_of(extra)
    assert "limit is 1" in refusal.params["text"]

    # Another chat's voice note waits behind it (one worker): its status says where and how long.
    mine = status.result["message_id"]
    chat.fake.wait(
        lambda: any(c.params["text"].startswith("⚙️") for c in chat.edits(mine)), 60, "processing"
    )
    behind = Chat(stack.fake, 17)
    waiting = behind.status_of(
        behind.send(voice=voice(stack.fake, "voice-17", "uv17", SPEECH_OGG.read_bytes()))
    )

    chat.final(status, timeout=300)
    parts = transcript_of(chat, status, parts=2)
    record_property("long_700s_to_transcript_s", round(time.monotonic() - sent_at, 3))
    record_property("long_transcript_parts", len(parts))
    shown = [c.params["text"] for c in chat.edits(mine)]
    record_property("long_status_edits", " | ".join(shown))
    assert any(re.fullmatch(r"⚙️ Processing… \d+% \(\w+\)", t) for t in shown), shown
    behind.final(waiting)
    queued = [c.params["text"] for c in behind.edits()]
    record_property("queued_status_edits", " | ".join(queued))
    assert re.fullmatch(r"⏳ Queued #1, about \d+ s", queued[0]), queued
    with ASRClient(stack.api.url, api_key=KEY) as asr:
        [lecture] = [item for item in asr.history(100) if item.filename == "lecture.ogg"]
        done = asr.result(lecture.task_id)
    assert done.text and len(done.text) > 4096 and len(parts) >= 2
    assert all(0 < len(p) <= 4096 for p in parts)
    assert "".join(parts) == done.text


def test_a_failed_task_is_retried_through_the_button(stack: Stack):
    env = stack.env
    for worker in env.workers:
        worker.stop(10)
    env.workers.clear()
    # A worker that takes nothing over one second: the voice note fails on it.
    env.worker("bot-worker-bad", ASR_MAX_AUDIO_SECONDS="1").wait_ready(env.conn())
    chat = Chat(stack.fake, 14)
    status = chat.status_of(
        chat.send(voice=voice(stack.fake, "v14", "u14", SPEECH_OGG.read_bytes()))
    )
    failed = chat.final(status)
    assert failed.params["text"].startswith("❌ Failed") and "limit" in failed.params["text"]
    [[button]] = failed.params["reply_markup"]["inline_keyboard"]
    assert button["text"] == "Retry" and button["callback_data"].startswith("retry:")
    task_id = button["callback_data"].removeprefix("retry:")

    for worker in env.workers:
        worker.stop(10)
    env.workers.clear()
    env.worker("bot-worker-2").wait_ready(env.conn())
    edits_before = len(chat.edits(status.result["message_id"]))
    stack.fake.push(stack.fake.press(failed.result, button["callback_data"]))
    answered = stack.fake.wait(lambda: stack.fake.of("answerCallbackQuery"), 30, "the answer")
    assert answered[0].params.get("text") == "Trying again"
    done = chat.final(status, since=edits_before)
    assert done.params["text"].startswith("✅ Done") and "reply_markup" not in done.params
    [text] = transcript_of(chat, status)
    with ASRClient(stack.api.url, api_key=KEY) as asr:
        task = asr.result(task_id)
    assert task.status == "done" and task.text == text


def test_webhook_mode(stack: Stack, tmp_path: Path):
    """The bot registers its webhook, and takes an update posted to it with the secret."""
    port = free_port()
    settings = stack.bot_settings(
        BOT_MODE="webhook",
        BOT_WEBHOOK_URL="https://bot.example.org/telegram",
        BOT_WEBHOOK_LISTEN="127.0.0.1",
        BOT_WEBHOOK_PORT=str(port),
        BOT_WEBHOOK_SECRET=SECRET,
    )
    hooked = BotProcess(settings, tmp_path / "bot-webhook.out").start()
    try:
        registered = stack.fake.wait(
            lambda: hooked.alive() and stack.fake.of("setWebhook"), 60, "setWebhook"
        )
        assert registered[0].params["url"] == "https://bot.example.org/telegram"
        assert registered[0].params["secret_token"] == SECRET
        chat = Chat(stack.fake, 16)
        url = f"http://127.0.0.1:{port}/telegram"
        note = voice(stack.fake, "voice-16", "u16", SPEECH_OGG.read_bytes())
        update = stack.fake.message_update(chat.chat_id, voice=note)
        for _ in range(100):  # the listener opens a moment after setWebhook
            try:
                wrong = httpx.post(
                    url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "x"}
                )
                break
            except httpx.ConnectError:
                time.sleep(0.1)
        assert wrong.status_code == 403
        ok = httpx.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
        assert ok.status_code == 200
        status = chat.status_of(update["message"])
        chat.final(status)
        [text] = transcript_of(chat, status)
        assert text == stack.latest().text
    finally:
        hooked.stop()
