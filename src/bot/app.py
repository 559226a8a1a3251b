"""The bot: Telegram updates in, the ASR service through the typed client (`src.client`), replies
out. Each recording is downloaded with getFile, submitted, and followed over the service's push
events in a task of its own, so the bot keeps taking updates while transcriptions run."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from telegram import (
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    Update,
)
from telegram.error import BadRequest, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackContext,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    ExtBot,
    MessageHandler,
    filters,
)

from src.bot.config import TELEGRAM_DOWNLOAD_LIMIT, BotSettings
from src.bot.state import ChatState, EditThrottle
from src.bot.text import (
    dedup_key,
    history_text,
    split_message,
    status_line,
    transcript_parts,
)
from src.client import ASRError, AsyncASRClient, Task
from src.client.client import WS_UNUSABLE

log = logging.getLogger(__name__)

Context = CallbackContext[ExtBot[None], dict[Any, Any], ChatState, dict[Any, Any]]
RETRY_PREFIX = "retry:"
RECORDINGS = filters.VOICE | filters.AUDIO | filters.VIDEO_NOTE | filters.Document.AUDIO
HELP = (
    "Send me a voice note, an audio file, a video note or an audio document (up to 20 MB) and "
    "I reply with its transcript.\n"
    "/hotwords word1 word2 … sets this chat's hotwords (/hotwords clear removes them)\n"
    "/history shows the latest transcriptions"
)


@dataclass(frozen=True)
class Recording:
    """The one file a message carries, as Telegram describes it."""

    file_id: str
    file_unique_id: str
    size: int | None
    filename: str


def recording_of(message: Message) -> Recording | None:
    """The voice note, audio file, video note or audio document in `message`, if any."""
    if message.voice:
        v = message.voice
        return Recording(v.file_id, v.file_unique_id, v.file_size, "voice.ogg")
    if message.audio:
        a = message.audio
        return Recording(a.file_id, a.file_unique_id, a.file_size, a.file_name or "audio")
    if message.video_note:
        n = message.video_note
        return Recording(n.file_id, n.file_unique_id, n.file_size, "video_note.mp4")
    if message.document:
        d = message.document
        return Recording(d.file_id, d.file_unique_id, d.file_size, d.file_name or "audio")
    return None


def too_big_text(size: int) -> str:
    return (
        f"This file is {size / 1024 / 1024:.1f} MB: Telegram lets bots download files up to "
        f"{TELEGRAM_DOWNLOAD_LIMIT // 1024 // 1024} MB. Please send a shorter recording, or "
        "compress it (e.g. as a voice note)."
    )


class StatusMessage:
    """The bot's message that shows where a task stands, edited in place as it moves on. Edits
    in one chat go one at a time, spaced by the chat's throttle. A state that comes too soon is
    held and shown when the chat's turn comes, unless a newer one replaces it first; the final
    state waits its turn and nothing older is shown after it."""

    def __init__(self, message: Message, throttle: EditThrottle) -> None:
        self.message = message
        self.text = message.text or ""
        self.throttle = throttle
        self.settled = False
        self._pending: str | None = None
        self._flusher: asyncio.Task[None] | None = None

    async def show(
        self, text: str, *, final: bool = False, markup: InlineKeyboardMarkup | None = None
    ) -> None:
        if final:
            self._pending = None
            await self._edit(text, markup, final=True)
        elif self.throttle.wait_s():
            self._pending = text
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush())
        else:
            await self._edit(text, None)

    async def _flush(self) -> None:
        await asyncio.sleep(self.throttle.wait_s())
        text, self._pending = self._pending, None
        if text is not None:
            try:
                await self._edit(text, None)
            except TelegramError:  # a progress line is not worth failing for
                log.warning("could not show %r", text, exc_info=True)

    async def _edit(
        self, text: str, markup: InlineKeyboardMarkup | None, *, final: bool = False
    ) -> None:
        async with self.throttle.lock:
            if self.settled or (text == self.text and markup is None):
                return
            await asyncio.sleep(self.throttle.wait_s())
            self.settled = final
            try:
                await self.message.edit_text(text, reply_markup=markup)
            except RetryAfter as exc:  # Telegram's 429: wait as long as it says
                if not final:
                    return
                delay = exc.retry_after
                seconds = delay if isinstance(delay, int | float) else delay.total_seconds()
                await asyncio.sleep(seconds)
                await self.message.edit_text(text, reply_markup=markup)
            except BadRequest as exc:
                if "not modified" not in exc.message.lower():
                    raise
            finally:
                self.throttle.mark()
            self.text = text


class TranscriptionBot:
    """The handlers, over one `AsyncASRClient`. Per-chat state is PTB's `chat_data` (a
    `ChatState`); what the bot holds itself is its settings and the client."""

    def __init__(self, settings: BotSettings, asr: AsyncASRClient) -> None:
        self.settings = settings
        self.asr = asr

    def register(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        app.add_handler(CommandHandler(["start", "help"], self.on_help))
        app.add_handler(CommandHandler("hotwords", self.on_hotwords))
        app.add_handler(CommandHandler("history", self.on_history))
        app.add_handler(MessageHandler(RECORDINGS, self.on_recording))
        app.add_handler(CallbackQueryHandler(self.on_retry, pattern=f"^{RETRY_PREFIX}"))
        app.add_error_handler(self.on_error)

    def _state(self, context: Context) -> ChatState:
        state = context.chat_data
        if state is None:  # only updates without a chat (inline queries), which we do not take
            raise RuntimeError("an update without a chat")
        state.throttle.interval_s = self.settings.edit_interval_s
        return state

    async def on_help(self, update: Update, context: Context) -> None:
        if update.effective_message:
            await update.effective_message.reply_text(HELP)

    async def on_hotwords(self, update: Update, context: Context) -> None:
        """`/hotwords a b c` sets the chat's hotwords (commas or spaces between them),
        `/hotwords clear` removes them, `/hotwords` alone shows them."""
        message = update.effective_message
        if message is None:
            return
        state = self._state(context)
        args = context.args or []
        if args == ["clear"]:
            state.hotwords = []
        elif args:
            words = " ".join(args).replace("，", ",").replace(",", " ").split()
            state.hotwords = list(dict.fromkeys(words))
        if state.hotwords:
            await message.reply_text("Hotwords for this chat: " + ", ".join(state.hotwords))
        else:
            await message.reply_text("No hotwords set. Send /hotwords word1 word2 … to set some.")

    async def on_history(self, update: Update, context: Context) -> None:
        message = update.effective_message
        if message is None:
            return
        try:
            items = await self.asr.history(self.settings.history_limit)
        except ASRError as exc:
            await message.reply_text(f"The service did not answer: {exc.error}")
            return
        for part in split_message(history_text(items)):
            await message.reply_text(part)

    async def on_recording(self, update: Update, context: Context) -> None:
        message = update.effective_message
        recording = recording_of(message) if message else None
        if message is None or recording is None:
            return
        # Telegram tells the size in the update: a file over its getFile limit is refused
        # before any download is tried.
        if recording.size is not None and recording.size > TELEGRAM_DOWNLOAD_LIMIT:
            await message.reply_text(too_big_text(recording.size), do_quote=True)
            return
        state = self._state(context)
        if len(state.active) >= self.settings.max_active_jobs:
            await message.reply_text(
                f"This chat already has {len(state.active)} recordings in progress (the limit is "
                f"{self.settings.max_active_jobs}). Send this one again when one is done.",
                do_quote=True,
            )
            return
        # The slot is taken before the download: updates are handled concurrently, and two
        # recordings sent together must not both pass the check above.
        slot = f"update:{update.update_id}"
        state.active.add(slot)
        try:
            # Replies quote what they answer (PTB quotes only in groups by default): with
            # several recordings in flight, the quote says which one a reply is about.
            reply = await message.reply_text("📥 Received, downloading…", do_quote=True)
            status = StatusMessage(reply, state.throttle)
            task = await self._submit(context, state, status, recording)
        finally:
            state.active.discard(slot)
        if task is not None:
            self._start_following(context, state, status, task, update)

    async def _submit(
        self, context: Context, state: ChatState, status: StatusMessage, recording: Recording
    ) -> Task | None:
        """Download the file and submit it; None when either refused (the status says why)."""
        try:
            telegram_file = await context.bot.get_file(recording.file_id)
            audio = bytes(await telegram_file.download_as_bytearray())
        except BadRequest as exc:  # e.g. "File is too big" where the update had no size
            await status.show(f"Telegram would not hand the file over: {exc.message}", final=True)
            return None
        try:
            return await self.asr.submit(
                audio,
                filename=recording.filename,
                language=self.settings.language,
                hotwords=state.hotwords or None,
                idempotency_key=dedup_key(
                    recording.file_unique_id, self.settings.language, state.hotwords
                ),
            )
        except ASRError as exc:
            await status.show(f"The service refused the recording: {exc.error}", final=True)
            return None

    async def on_retry(self, update: Update, context: Context) -> None:
        """The failure reply's "Retry" button: the service runs the task again and the failure
        reply turns back into its status message."""
        query = update.callback_query
        if query is None or query.data is None:
            return
        task_id = query.data.removeprefix(RETRY_PREFIX)
        state = self._state(context)
        if len(state.active) >= self.settings.max_active_jobs:
            await query.answer("Too many recordings in progress in this chat; try again later.")
            return
        try:
            task = await self.asr.retry(task_id)
        except ASRError as exc:
            await query.answer(f"Cannot retry: {exc.error}", show_alert=True)
            return
        await query.answer("Trying again")
        if not isinstance(query.message, Message):  # too old for Telegram to hand over
            chat_id = update.effective_chat.id if update.effective_chat else query.from_user.id
            reply = await context.bot.send_message(chat_id, "🔁 Retrying…")
        else:
            reply = query.message
        self._start_following(context, state, StatusMessage(reply, state.throttle), task, update)

    def _start_following(
        self, context: Context, state: ChatState, status: StatusMessage, task: Task, update: Update
    ) -> None:
        log.info(
            "chat %s: following task %s (%s)", status.message.chat_id, task.task_id, task.status
        )
        state.active.add(task.task_id)
        context.application.create_task(
            self._follow(state, status, task), update=update, name=f"follow {task.task_id}"
        )

    async def _follow(self, state: ChatState, status: StatusMessage, task: Task) -> None:
        """Show every state of the task until it is done or failed, then reply."""
        try:
            # Settled at submit (the result cache, or a replayed Idempotency-Key): the submit's
            # answer has no transcript, /result has.
            if task.settled:
                final = await self.asr.result(task.task_id)
            else:
                final = await self._track(status, task)
            await self._finish(status, final)
        except ASRError as exc:
            await status.show(f"❌ Lost the task: {exc.error}", final=True)
        finally:
            state.active.discard(task.task_id)

    async def _track(self, status: StatusMessage, task: Task) -> Task:
        last = task
        await status.show(status_line(task))
        timeout = self.settings.task_timeout_s
        try:
            async for last in self.asr.follow(task.task_id, timeout=timeout):
                if not last.settled:
                    await status.show(status_line(last))
        except WS_UNUSABLE:  # no WebSocket through here: long polls instead
            log.warning("no WebSocket to the service; following %s by long polls", task.task_id)
            last = await self.asr.wait(task.task_id, timeout=timeout, websocket=False)
        return last

    async def _finish(self, status: StatusMessage, task: Task) -> None:
        log.info("chat %s: task %s %s", status.message.chat_id, task.task_id, task.status)
        if task.status == "done":
            await status.show(status_line(task), final=True)
            for part in transcript_parts(task):
                await status.message.reply_text(part, do_quote=True)
        elif task.status == "failed":
            button = InlineKeyboardButton("Retry", callback_data=RETRY_PREFIX + task.task_id)
            markup = InlineKeyboardMarkup([[button]])
            await status.show(status_line(task), final=True, markup=markup)
        else:
            await status.show(
                f"⌛ Still {task.status} after {self.settings.task_timeout_s:.0f} s; see /history "
                "later.",
                final=True,
            )

    async def on_error(self, update: object, context: Context) -> None:
        log.error("update %s failed", update, exc_info=context.error)
        if isinstance(update, Update) and update.effective_message:
            try:
                await update.effective_message.reply_text("Something went wrong; please try again.")
            except TelegramError:
                log.warning("could not tell the chat about the error", exc_info=True)


def build_application(settings: BotSettings) -> Application[Any, Any, Any, Any, Any, Any]:
    """The PTB application with the bot's handlers; its client to the service is opened and
    closed with it."""
    asr = AsyncASRClient(
        settings.service_url,
        api_key=settings.service_api_key.get_secret_value() if settings.service_api_key else None,
    )
    bot = TranscriptionBot(settings, asr)

    async def close_client(_: Application[Any, Any, Any, Any, Any, Any]) -> None:
        await asr.aclose()

    app = (
        ApplicationBuilder()
        .token(settings.token.get_secret_value())
        .base_url(settings.api_base_url)
        .base_file_url(settings.api_file_url)
        .context_types(ContextTypes(chat_data=ChatState))
        .post_shutdown(close_client)
        # One chat's 20 MB download or slow submit does not hold up the others.
        .concurrent_updates(True)
        .build()
    )
    bot.register(app)
    return app
