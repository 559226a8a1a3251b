"""FunASR compatibility patches, each pinned to the FunASR it was written against.

pyproject.toml allows funasr >=1.4,<1.5 and uv.lock pins 1.4.16; every patch below was checked
against 1.4.16. A FunASR upgrade must re-check each one: the tests in tests/unit/asr/
(sentence alignment, batch-equals-solo text, empty segments) fail when a patch stops fitting.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def join_vad_texts_spaced(texts: Iterable[str]) -> str:
    """Replacement for `funasr.auto.auto_model._join_vad_texts` (FunASR 1.4.x, seen in 1.4.16).

    It glues Chinese VAD chunks without a space, after which its sentence splitter shifts every
    sentence's text by one token per pause (times stay right). Joining with spaces keeps the
    punctuated text the same and the sentences aligned.
    """
    cleaned = [re.sub(r"<\|[^|]*\|>", "", text).strip() for text in texts]
    return " ".join(text for text in cleaned if text)


def patch_join_vad_texts() -> None:
    """Install `join_vad_texts_spaced`; a FunASR without `_join_vad_texts` is left alone."""
    from funasr.auto import auto_model

    if hasattr(auto_model, "_join_vad_texts"):
        auto_model._join_vad_texts = join_vad_texts_spaced


def zero_padded_frames(model: Any) -> None:
    """Make a batched Paraformer decode give the same text as a solo one (FunASR 1.4.16).

    Paraformer's CIF predictor convolves over the encoder output, padding included: in a padded
    batch the last frames of a shorter segment see the padding's (non-zero) encoder states, so
    its last token can differ from decoding it alone (seen with FunASR's own GPU batches too).
    Zeroing the padded frames makes them look like the convolution's own zero padding. Wraps
    `model.encode`, for models that have one.
    """
    import torch

    encode = model.encode

    def masked(speech: Any, speech_lengths: Any, *args: Any, **kwargs: Any) -> Any:
        out = encode(speech, speech_lengths, *args, **kwargs)
        if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], torch.Tensor)):
            return out
        hidden, lengths = out
        if hidden.dim() != 3 or hidden.shape[0] < 2:
            return out
        frames = torch.arange(hidden.shape[1], device=hidden.device)[None, :]
        padded = (frames >= lengths.to(hidden.device)[:, None]).unsqueeze(-1)
        return hidden.masked_fill(padded, 0.0), lengths

    model.encode = masked


def pad_empty_results(inputs: Any, out: Any) -> Any:
    """Keep a transcript whose VAD segments include one that decodes to no token (FunASR 1.4.16).

    Such a segment comes back as no result at all, and `inference_with_vad` then blanks the whole
    transcript; an empty result in its place keeps the rest. Applied to every ASR sub-call by
    the recognizer's `AutoModel.inference` hook.
    """
    if isinstance(inputs, list) and len(out) < len(inputs):
        return list(out) + [
            {"key": f"empty-{i}", "text": "", "timestamp": []}
            for i in range(len(inputs) - len(out))
        ]
    return out
