"""The VLM path: a tiny randomly initialised Qwen2-VL, built offline and saved to disk,
is loaded by the transformers backend from its folder and receives key frames of a
real video through the graph.

No VLM checkpoint is available offline (ASSETS.md), so the architecture is real and
the weights are random: its text is noise, and the graph must fall back and say so.
The tokenizer is a byte-level BPE trained in memory; the chat template is trl's
Qwen2.5-VL one (ENVIRONMENT.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = ["Key Observations AU12 lip corner puller intensity happiness neutral surprise caption "
          "At the beginning As the video progresses Towards the end"] * 20
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
           "<|image_pad|>", "<|video_pad|>"]


def build_tiny_qwen2_vl(out: Path) -> Path:
    from tools.torchvision_compat import ensure

    ensure()
    import torch
    import trl
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl import (
        Qwen2VLImageProcessorPil,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_vl.jinja").read_text()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", chat_template=template)
    proc = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112),
                            tokenizer=tok, video_processor=Qwen2VLVideoProcessor(), chat_template=template)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIAL}
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"]),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=4, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, in_chans=3),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(cfg)
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    return build_tiny_qwen2_vl(tmp_path_factory.mktemp("tiny-qwen2-vl"))


@pytest.mark.slow
def test_vlm_receives_key_frames_through_the_graph(tiny_vlm, analyses, media):
    from agent import explain
    from agent.backends import TransformersBackend
    from agent.graph import KEY_FRAMES

    be = TransformersBackend.load(tiny_vlm)
    assert be.is_vlm
    a = analyses("single_face.mp4", fps=8)
    n_segments = len(a.tracks[0].segments) or 1
    r = explain(media("single_face.mp4"), backend=be, fps=8, max_new_tokens=24)
    (e,) = r.explanations
    gens = r.stats["generations"]
    assert gens and all(g["images"] == min(n_segments, KEY_FRAMES) for g in gens)
    # Image placeholder tokens expand to patches: far more prompt tokens than text alone.
    text_only = be.generate([{"role": "user", "content": "x"}], max_new_tokens=1)
    assert gens[0]["prompt_tokens"] > text_only.prompt_tokens + 16 * gens[0]["images"]
    # A random model writes noise: the explanation is still valid, and says it fell back.
    assert e.fallback_used and e.fallback_reason
    assert e.conclusion.label in a.emotion_labels and e.caption.startswith("At the beginning")
