"""A finished transcript as SubRip (.srt), WebVTT (.vtt) or plain text: one cue per sentence.

Both faces use it: the native export (`GET /api/v1/asr/result/{id}?format=srt`) and the OpenAI
`response_format=srt|vtt|text`, so a client gets the same file from either. The `srt` and
`webvtt-py` packages would add a dependency for what is three small functions here; the tests
parse the output back with a strict reader of each format.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from src.vocabulary import Sentence

_SPACE_RE = re.compile(r"\s+")


@dataclass(frozen=True)
class Cue:
    """One subtitle: from `start_ms` to `end_ms` (after the start), one line of text."""

    start_ms: int
    end_ms: int
    text: str


def one_line(text: str) -> str:
    """A cue's text on one line: a blank line inside a cue would end it in both formats."""
    return _SPACE_RE.sub(" ", text).strip()


def cues(sentences: Sequence[Sentence], text: str, duration_s: float | None) -> list[Cue]:
    """The transcript's cues in time order. An engine that gives no sentence times still gets
    one cue, over the whole clip; a silent clip gets none."""
    found = []
    for sentence in sorted(sentences, key=lambda s: (s.start, s.end)):
        line = one_line(sentence.text)
        if line:
            start = max(0, sentence.start)
            # Both formats want the end after the start; FunASR can stamp a one-token sentence
            # with equal times.
            found.append(Cue(start, max(sentence.end, start + 1), line))
    whole = one_line(text)
    if not found and whole:
        found.append(Cue(0, max(1, round((duration_s or 0) * 1000)), whole))
    return found


def timestamp(ms: int, decimal: str) -> str:
    """`HH:MM:SS,mmm` (SubRip, decimal=",") or `HH:MM:SS.mmm` (WebVTT, decimal=".")."""
    seconds, millis = divmod(max(0, ms), 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{decimal}{millis:03d}"


def srt(found: Sequence[Cue]) -> str:
    """SubRip: numbered blocks separated by a blank line; no cues is an empty file."""
    blocks = [
        f"{n}\n{timestamp(c.start_ms, ',')} --> {timestamp(c.end_ms, ',')}\n{c.text}\n"
        for n, c in enumerate(found, start=1)
    ]
    return "\n".join(blocks)


def vtt(found: Sequence[Cue]) -> str:
    """WebVTT: the header, then one block per cue. Cue text is HTML-like there, so `&`, `<` and
    `>` are escaped (which also keeps a `-->` in the text from reading as a timing line)."""
    blocks = [
        f"{timestamp(c.start_ms, '.')} --> {timestamp(c.end_ms, '.')}\n{_escape(c.text)}\n"
        for c in found
    ]
    return "\n".join(["WEBVTT\n", *blocks])


def plain(text: str) -> str:
    """The transcript as a text file: one line, ending in a newline (empty when silent)."""
    line = one_line(text)
    return f"{line}\n" if line else ""


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
