"""The status message's edits under the chat's throttle, with a stand-in for Telegram's Message
that records each edit and when it was made."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from src.bot.app import StatusMessage
from src.bot.state import EditThrottle

INTERVAL = 0.5


class Recorded:
    """Only what StatusMessage uses of telegram.Message: its text and edit_text."""

    def __init__(self) -> None:
        self.text = "📥 Received"
        self.edits: list[tuple[float, str, Any]] = []

    async def edit_text(self, text: str, reply_markup: Any = None) -> None:
        self.edits.append((time.monotonic(), text, reply_markup))


def status(throttle: EditThrottle) -> tuple[StatusMessage, Recorded]:
    message = Recorded()
    return StatusMessage(message, throttle), message  # type: ignore[arg-type]


async def moves(throttle: EditThrottle) -> list[tuple[float, str, Any]]:
    shown, message = status(throttle)
    await shown.show("⏳ Queued #2")  # at once
    await shown.show("⚙️ Processing… 10%")  # too soon: held
    await shown.show("⚙️ Processing… 20%")  # replaces the held one
    await asyncio.sleep(INTERVAL * 1.5)  # its turn comes (at 1x): shown; 2x is not here yet
    await shown.show("⚙️ Processing… 90%")  # held again
    await shown.show("✅ Done", final=True)  # waits its turn; 90% is never shown after it
    await asyncio.sleep(INTERVAL * 2)
    return message.edits


def test_states_that_come_too_soon_are_held_and_the_last_one_shown():
    edits = asyncio.run(moves(EditThrottle(interval_s=INTERVAL)))
    assert [text for _, text, _ in edits] == ["⏳ Queued #2", "⚙️ Processing… 20%", "✅ Done"]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(edits)]
    assert all(gap >= INTERVAL * 0.95 for gap in gaps), gaps


async def two_messages(throttle: EditThrottle) -> list[float]:
    (one, first), (two, second) = status(throttle), status(throttle)
    await asyncio.gather(one.show("a", final=True), two.show("b", final=True))
    return sorted(t for t, _, _ in first.edits + second.edits)


def test_one_chats_messages_share_its_throttle():
    first, second = asyncio.run(two_messages(EditThrottle(interval_s=INTERVAL)))
    assert second - first >= INTERVAL * 0.95


def test_the_same_text_is_not_sent_again():
    async def same() -> list[tuple[float, str, Any]]:
        shown, message = status(EditThrottle(interval_s=0))
        await shown.show("⏳ Queued #1")
        await shown.show("⏳ Queued #1")
        return message.edits

    assert len(asyncio.run(same())) == 1
