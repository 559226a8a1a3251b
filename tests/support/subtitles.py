"""Strict readers of SubRip and WebVTT files, to parse the service's exports back.

Written from the formats' definitions, not from the writer (src/results/subtitles.py): SubRip
is numbered blocks `N`, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, text lines, a blank line; WebVTT
(W3C) starts with `WEBVTT`, then blocks of an optional id, `[HH:]MM:SS.mmm --> [HH:]MM:SS.mmm`
and text lines. Anything else raises, so a malformed file fails the test that reads it.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

_SRT_TIME = r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3})"
_SRT_TIMING = re.compile(rf"^{_SRT_TIME} --> {_SRT_TIME}$")
_VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
_VTT_TIMING = re.compile(rf"^{_VTT_TIME} --> {_VTT_TIME}(?: .*)?$")


class SubtitleError(ValueError):
    """The text is not a well-formed file of the format."""


@dataclass(frozen=True)
class ParsedCue:
    start_ms: int
    end_ms: int
    text: str


def _ms(hours: str | None, minutes: str, seconds: str, millis: str) -> int:
    return ((int(hours or 0) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(millis)


def _blocks(text: str) -> list[list[str]]:
    if "\r" in text:
        raise SubtitleError("line ends must be LF here")
    return [block.split("\n") for block in text.strip("\n").split("\n\n") if block]


def _checked(cues: list[ParsedCue]) -> list[ParsedCue]:
    for cue in cues:
        if cue.end_ms <= cue.start_ms:
            raise SubtitleError(f"cue ends before it starts: {cue}")
        if not cue.text:
            raise SubtitleError(f"cue without text: {cue}")
    return cues


def parse_srt(text: str) -> list[ParsedCue]:
    if not text.strip():
        return []
    if not text.endswith("\n"):
        raise SubtitleError("the file must end with a line end")
    cues = []
    for number, lines in enumerate(_blocks(text), start=1):
        if len(lines) < 3 or lines[0] != str(number):
            raise SubtitleError(f"block {number} is not `{number}`, timing, text: {lines}")
        timing = _SRT_TIMING.match(lines[1])
        if timing is None:
            raise SubtitleError(f"bad SubRip timing line: {lines[1]!r}")
        parts = timing.groups()
        cues.append(ParsedCue(_ms(*parts[:4]), _ms(*parts[4:]), "\n".join(lines[2:])))
    return _checked(cues)


def parse_vtt(text: str) -> list[ParsedCue]:
    blocks = _blocks(text)
    if not blocks or not re.fullmatch(r"WEBVTT(?:[ \t].*)?", blocks[0][0]) or len(blocks[0]) > 1:
        raise SubtitleError("a WebVTT file starts with a `WEBVTT` line and a blank line")
    cues = []
    for lines in blocks[1:]:
        if lines and "-->" not in lines[0]:
            lines = lines[1:]  # a cue identifier
        timing = _VTT_TIMING.match(lines[0]) if lines else None
        if timing is None or len(lines) < 2:
            raise SubtitleError(f"bad WebVTT cue: {lines}")
        if any("-->" in line for line in lines[1:]):
            raise SubtitleError(f"`-->` inside a cue's text: {lines}")
        if any(re.search(r"&(?![a-z]+;|#\d+;)|<", line) for line in lines[1:]):
            raise SubtitleError(f"unescaped `&` or `<` in a cue's text: {lines}")
        parts = timing.groups()
        body = html.unescape("\n".join(lines[1:]))
        cues.append(ParsedCue(_ms(*parts[:4]), _ms(*parts[4:]), body))
    return _checked(cues)


def assert_in_time_order(cues: list[ParsedCue]) -> None:
    starts = [c.start_ms for c in cues]
    assert starts == sorted(starts), f"cue starts go backwards: {starts}"
