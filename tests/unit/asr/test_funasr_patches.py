"""src/asr/funasr_patches.py: each patch does what its docstring says, on FunASR 1.4.16."""

from __future__ import annotations

import torch

from src.asr import funasr_patches


def test_vad_texts_are_joined_with_spaces_and_rich_tags_dropped() -> None:
    texts = ["<|zh|><|NEUTRAL|>今天天气", "", "  很好 ", "<|en|>"]
    assert funasr_patches.join_vad_texts_spaced(texts) == "今天天气 很好"


def test_the_join_patch_replaces_funasrs_own() -> None:
    from funasr.auto import auto_model

    funasr_patches.patch_join_vad_texts()
    assert auto_model._join_vad_texts is funasr_patches.join_vad_texts_spaced


def test_a_segment_with_no_result_gets_an_empty_one() -> None:
    out = [{"key": "a", "text": "x", "timestamp": []}]
    padded = funasr_patches.pad_empty_results([b"a", b"b", b"c"], out)
    assert [r["text"] for r in padded] == ["x", "", ""]
    assert funasr_patches.pad_empty_results([b"a"], out) is out
    assert funasr_patches.pad_empty_results("not a batch", []) == []


class Encoder:
    """Returns non-zero states everywhere, padding included, as Paraformer's encoder does."""

    def encode(
        self, speech: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ones(speech.shape[0], speech.shape[1], 3), lengths


def test_padded_encoder_frames_are_zeroed_in_a_batch_and_kept_alone() -> None:
    model = Encoder()
    funasr_patches.zero_padded_frames(model)
    hidden, _ = model.encode(torch.zeros(2, 5), torch.tensor([5, 2]))
    assert hidden[0].sum() == 15  # the longest keeps every frame
    assert hidden[1, :2].sum() == 6 and hidden[1, 2:].sum() == 0  # padding after frame 2
    alone, _ = model.encode(torch.zeros(1, 5), torch.tensor([3]))
    assert alone.sum() == 15  # a batch of one is left as it is
