"""Form fields the native submit and the OpenAI-compatible face read alike."""

from __future__ import annotations

from src.api import errors
from src.api.errors import APIError
from src.asr.hotwords import MAX_HOTWORDS, is_valid_hotword, parse_hotwords, unique_hotwords


def request_hotwords(text: str | None) -> list[str]:
    """A request's hotwords, de-duplicated: 422 for a word SeACo could misread (a file name, a
    URL, punctuation) or for more than MAX_HOTWORDS, rather than a silent cut."""
    words = parse_hotwords(text)
    invalid = [w for w in words if not is_valid_hotword(w)]
    if invalid:
        raise APIError(422, "Invalid hotwords", invalid=invalid[:20])
    wanted = unique_hotwords(words)
    if len(wanted) > MAX_HOTWORDS:
        raise errors.too_many_hotwords(len(wanted), MAX_HOTWORDS)
    return wanted
