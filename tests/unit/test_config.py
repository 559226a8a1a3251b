"""src/config.py: what Settings derive from the values they are given, and how load_settings
reports bad ones (one line per key, named as the environment variable)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from src.config import (
    DEFAULT_BATCH_JOBS_CPU,
    DEFAULT_BATCH_JOBS_GPU,
    SettingsError,
    load_settings,
    parse_size,
)
from tests.support.fixtures import make_settings


def test_cpu_threads_share_the_cores_among_workers_unless_set(
    monkeypatch: pytest.MonkeyPatch, storage: Path
):
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    assert make_settings(6379, storage, rq_worker_count=2).cpu_threads == 4
    assert make_settings(6379, storage, rq_worker_count=16).cpu_threads == 1
    assert make_settings(6379, storage, asr_cpu_threads=3).cpu_threads == 3


def test_batching_defaults_by_device_and_can_be_set(storage: Path):
    assert make_settings(6379, storage, asr_device="cuda").batch_jobs == DEFAULT_BATCH_JOBS_GPU
    assert make_settings(6379, storage, asr_device="cpu").batch_jobs == DEFAULT_BATCH_JOBS_CPU
    assert make_settings(6379, storage, asr_device="cpu", asr_batch_jobs=4).batch_jobs == 4


def test_prep_processes_by_device_and_cores(storage: Path, monkeypatch: pytest.MonkeyPatch):
    """The pipeline is off on CPU, and on CUDA takes the worker's cores less one, at most 8."""
    assert make_settings(6379, storage, asr_device="cpu").prep_processes == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(16)))
    one: dict[str, object] = {"asr_device": "cuda", "rq_worker_count": 1}
    assert make_settings(6379, storage, **one).prep_processes == 8
    assert make_settings(6379, storage, **(one | {"rq_worker_count": 4})).prep_processes == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert make_settings(6379, storage, **one).prep_processes == 1
    assert make_settings(6379, storage, asr_device="cuda", asr_prep_processes=0).prep_processes == 0
    assert make_settings(6379, storage, asr_device="cpu", asr_prep_processes=2).prep_processes == 2


@pytest.fixture
def no_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """load_settings reads `.env` in the working directory: run it where there is none, and
    without any of these keys in the environment."""
    monkeypatch.chdir(tmp_path)
    for key in ("REDIS_PORT", "ASR_DEVICE", "LOG_ROTATION", "MAX_RECORDINGS", "ASR_LANGUAGES"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


def test_load_settings_names_each_bad_key_and_what_it_got(no_env_file: Path):
    with pytest.raises(SettingsError) as caught:
        load_settings(redis_port=0, asr_device="tpu", log_rotation="big", max_history_records=5)
    lines = str(caught.value).splitlines()
    assert lines[0] == "invalid settings:"
    named = {line.strip().split(":", 1)[0]: line for line in lines[1:]}
    assert set(named) == {"REDIS_PORT", "ASR_DEVICE", "LOG_ROTATION"}  # the good key is not named
    assert named["REDIS_PORT"].endswith("(got 0)")
    assert "'auto', 'cpu', 'cuda' or 'cuda:N'" in named["ASR_DEVICE"]
    assert named["ASR_DEVICE"].endswith("(got 'tpu')")
    assert "expected a size such as '10 MB'" in named["LOG_ROTATION"]


def test_a_bad_value_from_the_environment_is_named_by_its_variable(
    no_env_file: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("MAX_RECORDINGS", "0")
    with pytest.raises(SettingsError, match=r"MAX_RECORDINGS: .*greater than 0.*\(got '0'\)"):
        load_settings()


def test_a_rule_across_keys_is_reported_too(no_env_file: Path):
    with pytest.raises(SettingsError, match="ASR_LANGUAGES must name at least one language"):
        load_settings(asr_languages=[])


def test_the_env_file_is_read_and_the_environment_wins_over_it(
    no_env_file: Path, monkeypatch: pytest.MonkeyPatch
):
    (no_env_file / ".env").write_text("MAX_RECORDINGS=7\nASR_DEVICE=cpu\n", encoding="utf-8")
    assert load_settings().max_recordings == 7
    monkeypatch.setenv("MAX_RECORDINGS", "8")
    settings = load_settings()
    assert (settings.max_recordings, settings.asr_device) == (8, "cpu")


@pytest.mark.parametrize(
    ("text", "size"),
    [("10 MB", 10 * 1024**2), ("1.5KB", 1536), (" 2 gb ", 2 * 1024**3), ("512", 512), (64, 64)],
)
def test_sizes_read_the_way_loguru_writes_them(text: str | int, size: int):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["ten MB", "10 TB", "-1 MB", ""])
def test_a_size_that_is_not_one_is_refused(text: str):
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(text)


def test_the_redis_url_quotes_the_password_and_the_display_drops_it(storage: Path):
    settings = make_settings(6380, storage, redis_host="cache", redis_db=2, redis_password="p@s/s")
    assert settings.redis_dsn == "redis://:p%40s%2Fs@cache:6380/2"
    assert settings.redis_display == "redis://cache:6380/2"
    url = make_settings(6380, storage, redis_url="rediss://:secret@r.example:6390/1")
    assert url.redis_dsn == "rediss://:secret@r.example:6390/1"  # REDIS_URL wins
    assert url.redis_display == "rediss://r.example:6390/1"


def test_the_device_follows_asr_device_else_asr_use_gpu(storage: Path):
    assert make_settings(1, storage, asr_device="auto", asr_use_gpu=True).device == "cuda"
    assert make_settings(1, storage, asr_device="auto", asr_use_gpu=False).device == "cpu"
    assert make_settings(1, storage, asr_device=" CUDA:1 ", asr_use_gpu=False).device == "cuda:1"


def test_values_are_normalised(storage: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(storage))
    settings = make_settings(1, Path("~/data"), api_key="", log_level="debug")
    assert settings.api_key is None  # an empty API_KEY leaves the API open, it is not a key
    assert settings.log_level == "DEBUG"
    assert settings.storage_path == storage / "data"
    assert settings.history_file == storage / "data" / "logs" / "asr_history.jsonl"
    assert settings.recordings_dir == storage / "data" / "recordings"


def test_the_openai_settings_are_checked(no_env_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_WAIT_SECONDS", "300000")  # milliseconds by mistake
    monkeypatch.setenv("OPENAI_MODEL_ALIASES", '["whisper-1", "bad alias"]')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    text = str(caught.value)
    assert "OPENAI_WAIT_SECONDS: Input should be less than or equal to 3600" in text
    assert "OPENAI_MODEL_ALIASES: " in text and "['bad alias']" in text
    monkeypatch.setenv("OPENAI_WAIT_SECONDS", "30")
    monkeypatch.setenv("OPENAI_MODEL_ALIASES", '["whisper-1", "whisper-1", "gpt-4o-transcribe"]')
    settings = load_settings()
    assert settings.openai_wait_seconds == 30
    assert settings.openai_model_aliases == ["whisper-1", "gpt-4o-transcribe"]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("iic/speech_seaco_paraformer", "iic/speech_seaco_paraformer"),  # a ModelScope id
        ("/srv/models/paraformer-zh/", "paraformer-zh"),
        ("~/models/paraformer-zh", "paraformer-zh"),
        ("./models/paraformer-zh", "paraformer-zh"),
        ("var/lib/asr/paraformer-zh", "paraformer-zh"),
    ],
)
def test_clients_see_the_models_id_or_its_directorys_name(storage: Path, model: str, name: str):
    assert make_settings(1, storage, asr_model=model).asr_model_name == name


def test_sentinels_are_host_port_pairs_from_the_environment(
    no_env_file: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("REDIS_SENTINELS", '["s1:26379", "10.0.0.2:26380", "[::1]:26381"]')
    monkeypatch.setenv("REDIS_SENTINEL_PASSWORD", "")
    settings = load_settings()
    assert settings.sentinel_addresses == [("s1", 26379), ("10.0.0.2", 26380), ("::1", 26381)]
    assert settings.redis_sentinel_password is None  # empty in .env means none
    assert settings.redis_display == "sentinel://s1:26379,10.0.0.2:26380,[::1]:26381/mymaster/0"
    with pytest.raises(SettingsError, match=r"REDIS_SENTINELS: .*host:port.*'s1'"):
        load_settings(redis_sentinels=["s1"])
    with pytest.raises(SettingsError, match=r"REDIS_SENTINELS: .*host:port.*'s1:99999'"):
        load_settings(redis_sentinels=["s1:99999"])
