"""What makes two uploads "the same" (src/service/dedup.py): the result cache's fingerprint
changes with anything that changes the transcript and with nothing else; a request's identity
under an Idempotency-Key adds every option sent; keys are scoped per API key."""

from __future__ import annotations

from pathlib import Path

import pytest

from src.config import Settings
from src.service import dedup
from tests.support.fixtures import make_settings

AUDIO = "a" * 64
HOTWORDS = ["今天", "天气"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(6379, tmp_path)


def test_hotword_order_repeats_and_the_files_words_do_not_change_the_fingerprint(
    settings: Settings,
):
    key = dedup.fingerprint(settings, AUDIO, "zh", ["今天", "天气"])
    assert dedup.fingerprint(settings, AUDIO, "zh", ["天气", "今天", "天气"]) == key
    settings.asr_hotwords_path.write_text("今天\n# a comment\n")
    assert dedup.fingerprint(settings, AUDIO, "zh", ["天气"]) == key  # 今天 is applied anyway


def test_other_audio_language_or_hotwords_change_the_fingerprint(settings: Settings):
    key = dedup.fingerprint(settings, AUDIO, "zh", HOTWORDS)
    assert dedup.fingerprint(settings, "b" * 64, "zh", HOTWORDS) != key
    assert dedup.fingerprint(settings, AUDIO, "en", HOTWORDS) != key
    assert dedup.fingerprint(settings, AUDIO, "zh", ["今天"]) != key


@pytest.mark.parametrize(
    "model",
    [
        {"asr_model": "other/asr"},
        {"asr_vad_model": "other/vad"},
        {"asr_punc_model": "other/punc"},
        {"worker_engine": "tests.support.loudness_engine:load"},
    ],
    ids=lambda model: next(iter(model)),
)
def test_another_model_changes_the_fingerprint(tmp_path: Path, model: dict[str, str]):
    key = dedup.fingerprint(make_settings(6379, tmp_path), AUDIO, "zh", HOTWORDS)
    assert dedup.fingerprint(make_settings(6379, tmp_path, **model), AUDIO, "zh", HOTWORDS) != key


def test_an_edited_hotwords_file_changes_the_fingerprint(settings: Settings):
    key = dedup.fingerprint(settings, AUDIO, "zh", [])
    settings.asr_hotwords_path.write_text("明天\n")
    assert dedup.fingerprint(settings, AUDIO, "zh", []) != key


def test_batch_size_is_part_of_a_request_not_of_its_transcript():
    assert dedup.request_fingerprint("f", 500, None) == dedup.request_fingerprint("f", 500, None)
    assert dedup.request_fingerprint("f", 500, None) != dedup.request_fingerprint("f", 60, None)
    assert dedup.request_fingerprint("f", 500, None) != dedup.request_fingerprint("g", 500, None)


def test_a_callback_url_is_part_of_a_request_and_its_absence_keeps_earlier_claims_valid():
    hook = "https://bot.example/hook"
    assert dedup.request_fingerprint("f", 500, hook) == dedup.request_fingerprint("f", 500, hook)
    assert dedup.request_fingerprint("f", 500, hook) != dedup.request_fingerprint("f", 500, None)
    assert dedup.request_fingerprint("f", 500, hook) != dedup.request_fingerprint(
        "f", 500, hook + "2"
    )
    # The identity of a request without one, as claims stored before callbacks existed hold it.
    before = dedup._sha256({"result": "f", "batch_size": 500})
    assert dedup.request_fingerprint("f", 500, None) == before


def test_keys_are_scoped_per_api_key_and_stored_hashed(tmp_path: Path):
    open_api = dedup.claim_for(make_settings(6379, tmp_path), "tg-1", "r")
    keyed = dedup.claim_for(make_settings(6379, tmp_path, api_key="k1"), "tg-1", "r")
    rotated = dedup.claim_for(make_settings(6379, tmp_path, api_key="k2"), "tg-1", "r")
    assert len({open_api.key, keyed.key, rotated.key}) == 3
    assert open_api.key.startswith("asr:idempotency:open:")
    assert all("tg-1" not in c.key and "k1" not in c.key for c in (open_api, keyed, rotated))
