"""Counting what a real Redis connection sends: round trips (packets written: one per command,
one per pipeline) and the commands in them. Nothing is faked: the commands go to Redis as usual.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis


@dataclass
class Tally:
    """What the connections of one client sent since the last `reset`."""

    round_trips: int = 0
    commands: list[str] = field(default_factory=list)

    def reset(self) -> None:
        self.round_trips = 0
        self.commands.clear()


def _name(args: tuple[Any, ...]) -> str:
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args[:2]]
    two = {"SCRIPT", "CLIENT", "CONFIG"}  # commands whose sub-command says what they do
    return " ".join(words if words[0].upper() in two else words[:1]).upper()


def counting_connection(tally: Tally) -> type[redis.connection.Connection]:
    """A Connection class whose instances add to `tally` what they send."""

    class Counted(redis.connection.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            tally.round_trips += 1
            super().send_packed_command(command, check_health)

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            tally.commands.append(_name(args))
            super().send_command(*args, **kwargs)

        def pack_commands(self, commands: Iterable[tuple[Any, ...]]) -> list[bytes | memoryview]:
            listed = list(commands)
            tally.commands.extend(_name(args) for args in listed)
            packed: list[bytes | memoryview] = super().pack_commands(listed)
            return packed

    return Counted


def count_on(client: redis.Redis) -> Tally:
    """Make `client` count from its next new connection on; call before it has connected."""
    tally = Tally()
    client.connection_pool.connection_class = counting_connection(tally)
    return tally
