"""Per-chat state. PTB keeps one `ChatState` per chat as its `chat_data` (the bot's
`ContextTypes`), so nothing lives in module globals and a persistence backend could store it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class EditThrottle:
    """At most one status edit per `interval_s` in a chat: Telegram answers 429 to a chat that
    gets more than about one message a second, and edits count."""

    interval_s: float = 2.0
    clock: Callable[[], float] = time.monotonic
    last: float | None = None
    # Held while an edit is made: the chat's status messages edit one at a time.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def wait_s(self) -> float:
        """Seconds before the next edit is allowed (0: now)."""
        if self.last is None:
            return 0.0
        return max(0.0, self.last + self.interval_s - self.clock())

    def mark(self) -> None:
        """An edit went out now."""
        self.last = self.clock()


@dataclass
class ChatState:
    """One chat's hotwords, the tasks it is waiting for, and its edit throttle."""

    hotwords: list[str] = field(default_factory=list)
    active: set[str] = field(default_factory=set)
    throttle: EditThrottle = field(default_factory=EditThrottle)
