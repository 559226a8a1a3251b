"""What the bot writes: status lines, the transcript in message-sized parts, the history list,
and the idempotency key of a Telegram file. Plain functions, so they are tested without Telegram.
"""

from __future__ import annotations

import hashlib

from src.bot.config import TELEGRAM_MESSAGE_LIMIT
from src.client import HistoryItem, Task

# Where a long transcript is best cut, best first: a paragraph, a line, a sentence, a word.
_BREAKS = ("\n\n", "\n", "。", "！", "？", ". ", "! ", "? ", "，", ", ", " ")


def split_message(text: str, limit: int = TELEGRAM_MESSAGE_LIMIT) -> list[str]:
    """`text` in parts of at most `limit` characters, each cut after the last paragraph, line,
    sentence or word break of its window (hard at `limit` when the window has none: Chinese
    transcripts may run on without spaces). Joined back, the parts are the text."""
    if limit < 1:
        raise ValueError("limit must be positive")
    parts: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        cut = max((window.rfind(mark) + len(mark) for mark in _BREAKS if mark in window), default=0)
        if cut < limit // 2:  # a break near the start would leave a tiny part: cut hard
            cut = limit
        parts.append(text[:cut])
        text = text[cut:]
    if text or not parts:
        parts.append(text)
    return parts


def status_line(task: Task) -> str:
    """The status message for one state of a task."""
    if task.status == "queued":
        where = f" #{task.position}" if task.position else ""
        eta = f", about {round(task.estimated_wait)} s" if task.estimated_wait else ""
        return f"⏳ Queued{where}{eta}"
    if task.status == "processing":
        stage = f" ({task.stage})" if task.stage else ""
        return f"⚙️ Processing… {task.progress}%{stage}"
    if task.status == "done":
        cached = " (from the cache)" if task.cached else ""
        length = f" {task.duration:.1f} s of audio" if task.duration else ""
        return f"✅ Done:{length}{cached}"
    return f"❌ Failed: {task.error or 'unknown error'}"


def transcript_parts(task: Task) -> list[str]:
    """The transcript as replies; a recording with no speech says so instead of an empty
    message (Telegram refuses those)."""
    text = (task.text or "").strip()
    return split_message(text) if text else ["(no speech heard)"]


def history_text(items: list[HistoryItem]) -> str:
    """The service's history, newest first, one line each."""
    if not items:
        return "No transcriptions yet."
    lines = []
    for item in items:
        when = item.created_at.strftime("%m-%d %H:%M")
        length = f" {item.duration:.0f}s" if item.duration else ""
        cached = " cached" if item.cached else ""
        gist = item.text if item.status != "failed" else (item.error or "")
        gist = gist if len(gist) <= 60 else gist[:59] + "…"
        lines.append(f"{when} {item.status}{length}{cached}: {gist}")
    return "\n".join(lines)


def dedup_key(file_unique_id: str, language: str, hotwords: list[str]) -> str:
    """The submit's Idempotency-Key for one Telegram file. `file_unique_id` is the same for every
    forward of a file, to any chat and any bot; the language and the chat's hotwords change the
    transcript, so they are part of the key."""
    parts = "\n".join([file_unique_id, language, *sorted(hotwords)])
    return "tg-file-" + hashlib.sha256(parts.encode()).hexdigest()[:40]
