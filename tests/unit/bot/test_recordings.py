"""Which file of a Telegram message the bot transcribes, on python-telegram-bot's own types."""

from __future__ import annotations

from datetime import datetime

from telegram import Audio, Chat, Document, Message, VideoNote, Voice

from src.bot.app import Recording, recording_of, too_big_text

CHAT = Chat(1, "private")
AT = datetime(2026, 12, 1)


def message(**content: object) -> Message:
    return Message(message_id=1, date=AT, chat=CHAT, **content)  # type: ignore[arg-type]


def test_each_kind_of_recording_is_found_with_its_size_and_name():
    assert recording_of(message(voice=Voice("f1", "u1", 3, file_size=9000))) == Recording(
        "f1", "u1", 9000, "voice.ogg"
    )
    audio = Audio("f2", "u2", 60, file_name="talk.mp3", file_size=1)
    assert recording_of(message(audio=audio)) == Recording("f2", "u2", 1, "talk.mp3")
    note = VideoNote("f3", "u3", 240, 10)
    assert recording_of(message(video_note=note)) == Recording("f3", "u3", None, "video_note.mp4")
    doc = Document("f4", "u4", file_name="memo.m4a", mime_type="audio/mp4", file_size=5)
    assert recording_of(message(document=doc)) == Recording("f4", "u4", 5, "memo.m4a")
    assert recording_of(message(text="hello")) is None


def test_the_oversize_reply_names_both_sizes():
    assert too_big_text(25 * 1024 * 1024).startswith("This file is 25.0 MB")
    assert "up to 20 MB" in too_big_text(25 * 1024 * 1024)
