"""The VLM path: a tiny randomly initialised Qwen2-VL, built offline and saved to disk,
is loaded by the transformers backend from its folder, receives key frames of a
real video through the agent loop, and decodes under the same JSON-schema
constraint as the text model.

No VLM checkpoint is available offline (ASSETS.md), so the architecture is real and
the weights are random: what it decides is noise, but the constraint makes it a
valid record of this face (ids that exist, a label from the set), which is what
this test checks. The tokenizer is a byte-level BPE trained in memory; the chat
template is trl's Qwen2.5-VL one (ENVIRONMENT.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = ['{"cite":["AU12a","AU06b"],"arc":["neutral1","happiness1"],"label":"happiness","conf":0.8,"alt":null,'
          '"why":[],"note":"","tool":"moment","args":{"t":2.5}} neutral surprise sadness AU12'] * 20
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
def test_vlm_receives_key_frames_and_decodes_a_valid_record(tiny_vlm, analyses, media):
    from agent import evidence as ev
    from agent import explain
    from agent.decision import decision_schema, parse_decision
    from agent.graph import KEY_FRAMES
    from agent.transformers_backend import TransformersBackend

    be = TransformersBackend.load(tiny_vlm)
    assert be.is_vlm
    a = analyses("single_face.mp4", fps=8)
    n_segments = len(a.tracks[0].segments) or 1
    r = explain(media("single_face.mp4"), backend=be, fps=8, max_new_tokens=400)
    (e,) = r.explanations
    gens = r.stats["generations"]
    assert gens and all(g["images"] == min(n_segments, KEY_FRAMES) and g["constrained"] for g in gens)
    # Image placeholder tokens expand to patches: far more prompt tokens than text alone.
    text_only = be.generate([{"role": "user", "content": "x"}], max_new_tokens=1)
    assert gens[0]["prompt_tokens"] > text_only.prompt_tokens + 16 * gens[0]["images"]
    # Random weights, constrained decoding: the record is valid for this face.
    assert not e.fallback_used and e.decided_by == "model"
    f = ev.facts(r.analysis, r.analysis.track(e.track_id))
    assert parse_decision(e.decision, f, r.analysis.emotion_labels)
    assert e.conclusion.label in a.emotion_labels and e.caption.startswith("At the beginning")
    # The same constraint on a bare request, without the agent.
    g = be.generate([{"role": "user", "content": "decide"}],
                    schema=decision_schema(f, r.analysis.emotion_labels), max_new_tokens=400)
    assert parse_decision(g.text, f, r.analysis.emotion_labels)
