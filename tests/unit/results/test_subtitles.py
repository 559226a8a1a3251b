"""src/results/subtitles.py: cues from sentences, SubRip and WebVTT files that strict readers
accept, and the timestamps both formats spell."""

from __future__ import annotations

import pytest

from src.results import subtitles
from src.results.subtitles import Cue
from src.vocabulary import Sentence
from tests.support.subtitles import SubtitleError, parse_srt, parse_vtt

SENTENCES = [
    Sentence(text="今天天气很好。", start=380, end=3100),
    Sentence(text="We met at 10:30.", start=3500, end=6020),
]


@pytest.mark.parametrize(
    ("ms", "srt", "vtt"),
    [
        (0, "00:00:00,000", "00:00:00.000"),
        (1, "00:00:00,001", "00:00:00.001"),
        (59_999, "00:00:59,999", "00:00:59.999"),
        (61_005, "00:01:01,005", "00:01:01.005"),
        (3_600_000, "01:00:00,000", "01:00:00.000"),
        (3 * 3_600_000 + 59 * 60_000 + 59_999, "03:59:59,999", "03:59:59.999"),
        (100 * 3_600_000, "100:00:00,000", "100:00:00.000"),
        (-5, "00:00:00,000", "00:00:00.000"),
    ],
)
def test_timestamps_in_both_spellings(ms: int, srt: str, vtt: str):
    assert subtitles.timestamp(ms, ",") == srt
    assert subtitles.timestamp(ms, ".") == vtt


SRT = (
    "1\n00:00:00,380 --> 00:00:03,100\n今天天气很好。\n"
    "\n"
    "2\n00:00:03,500 --> 00:00:06,020\nWe met at 10:30.\n"
)
VTT = (
    "WEBVTT\n"
    "\n"
    "00:00:00.380 --> 00:00:03.100\n今天天气很好。\n"
    "\n"
    "00:00:03.500 --> 00:00:06.020\nWe met at 10:30.\n"
)


@pytest.mark.parametrize(
    ("write", "read", "expected"),
    [(subtitles.srt, parse_srt, SRT), (subtitles.vtt, parse_vtt, VTT)],
    ids=["srt", "vtt"],
)
def test_one_block_per_sentence_that_reads_back(write, read, expected: str):
    """SubRip numbers its blocks and writes `,`; WebVTT has its header and writes `.`."""
    text = write(subtitles.cues(SENTENCES, "ignored", 6.6))
    assert text == expected
    assert [(c.start_ms, c.end_ms, c.text) for c in read(text)] == [
        (380, 3100, "今天天气很好。"),
        (3500, 6020, "We met at 10:30."),
    ]


def test_vtt_escapes_what_would_read_as_markup_or_a_timing():
    found = [Cue(0, 1000, "a < b & c --> d")]
    text = subtitles.vtt(found)
    assert "a &lt; b &amp; c --&gt; d" in text
    assert parse_vtt(text)[0].text == "a < b & c --> d"


def test_a_sentence_with_line_breaks_stays_one_cue():
    found = subtitles.cues([Sentence(text="first\n\nsecond  line", start=0, end=900)], "", 1.0)
    assert found == [Cue(0, 900, "first second line")]
    assert len(parse_srt(subtitles.srt(found))) == 1
    assert len(parse_vtt(subtitles.vtt(found))) == 1


def test_cues_come_in_time_order_and_always_end_after_they_start():
    found = subtitles.cues(
        [
            Sentence(text="b", start=2000, end=2000),  # one token, stamped with equal times
            Sentence(text="a", start=500, end=1500),
            Sentence(text="  ", start=1600, end=1900),  # nothing to show
        ],
        "a b",
        3.0,
    )
    assert found == [Cue(500, 1500, "a"), Cue(2000, 2001, "b")]
    parse_srt(subtitles.srt(found))


def test_text_without_sentence_times_is_one_cue_over_the_clip():
    assert subtitles.cues([], " all of it ", 4.25) == [Cue(0, 4250, "all of it")]


def test_silence_is_an_empty_srt_and_a_bare_vtt():
    found = subtitles.cues([], "", 3.0)
    assert found == []
    assert subtitles.srt(found) == ""
    assert subtitles.vtt(found) == "WEBVTT\n"
    assert parse_srt("") == [] and parse_vtt("WEBVTT\n") == []
    assert subtitles.plain("") == ""


def test_plain_text_is_one_line_with_a_line_end():
    assert subtitles.plain(" 今天\n天气 ") == "今天 天气\n"


@pytest.mark.parametrize(
    "broken",
    [
        "1\n00:00:00.380 --> 00:00:03,100\nx\n",  # VTT's dot in SubRip
        "2\n00:00:00,380 --> 00:00:03,100\nx\n",  # numbering starts at 1
        "1\n00:00:03,100 --> 00:00:00,380\nx\n",  # ends before it starts
        "1\n00:00:00,380 --> 00:00:03,100\n",  # no text
    ],
)
def test_the_srt_reader_is_strict(broken: str):
    with pytest.raises(SubtitleError):
        parse_srt(broken)


@pytest.mark.parametrize(
    "broken",
    [
        "00:00:00.380 --> 00:00:03.100\nx\n",  # no header
        "WEBVTT\n\n00:00:00,380 --> 00:00:03,100\nx\n",  # SubRip's comma
        "WEBVTT\n\n00:00:00.380 --> 00:00:03.100\na < b\n",  # unescaped markup
    ],
)
def test_the_vtt_reader_is_strict(broken: str):
    with pytest.raises(SubtitleError):
        parse_vtt(broken)
