"""Hotword lists: the configured file plus per-request extras, cleaned for FunASR's SeACo model.

Kept apart from the recognizer so the API can validate hotwords without importing the engine.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

# SeACo splits the joined hotword string on whitespace, reads it as a file when it ends in ".txt"
# and downloads it when it starts with "http": allow word characters only.
_HOTWORD_RE = re.compile(r"^[\w\u4e00-\u9fff'\-]{1,32}$")
_SPLIT_RE = re.compile(r"[\s,;，；、]+")
MAX_HOTWORDS = 200


def read_hotwords_file(path: Path) -> list[str]:
    """One hotword per line, `#` starts a comment; a missing file means no hotwords."""
    if not path.is_file():
        return []
    words = []
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.split("#", 1)[0].strip()
        if word:
            words.append(word)
    return words


def is_valid_hotword(word: str) -> bool:
    return bool(_HOTWORD_RE.match(word)) and not word.lower().startswith("http")


def parse_hotwords(text: str | None) -> list[str]:
    """A request's hotwords field: words separated by spaces, commas or new lines."""
    return [w for w in _SPLIT_RE.split(text or "") if w]


def unique_hotwords(words: Iterable[str]) -> list[str]:
    """Valid hotwords, de-duplicated, order kept: what a request asks for, before any cap."""
    seen: dict[str, None] = {}
    for word in words:
        word = word.strip()
        if is_valid_hotword(word):
            seen.setdefault(word, None)
    return list(seen)


def clean_hotwords(words: Iterable[str]) -> list[str]:
    """Valid hotwords, de-duplicated, order kept, at most MAX_HOTWORDS. The API refuses a request
    with more; here the configured file's words come first, so a request's extras are the ones
    cut, and the result's `hotwords` lists what was applied."""
    return unique_hotwords(words)[:MAX_HOTWORDS]
