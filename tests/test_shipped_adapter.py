"""The shipped LoRA adapter (models/facereason-smollm2-lora): small, fp16, used by
default, and it changes what the model writes (the base model never writes the layout)."""

from __future__ import annotations

import json

from agent.backends import DEFAULT_ADAPTER, ENV_ADAPTER, resolve_adapter


def test_shipped_adapter_is_small_fp16_and_has_a_card():
    from safetensors import safe_open

    cfg = json.loads((DEFAULT_ADAPTER / "adapter_config.json").read_text())
    assert cfg["r"] <= 16 and cfg["base_model_name_or_path"].endswith("SmolLM2-135M-Instruct")
    weights = DEFAULT_ADAPTER / "adapter_model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    with safe_open(str(weights), "pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}
    assert dtypes == {"torch.float16"}
    card = (DEFAULT_ADAPTER / "README.md").read_text()
    assert "| SFT+GRPO |" in card and "base_model:" in card


def test_agent_uses_the_shipped_adapter_by_default(monkeypatch):
    monkeypatch.delenv(ENV_ADAPTER, raising=False)
    assert resolve_adapter(None, None) == str(DEFAULT_ADAPTER)
    assert resolve_adapter(None, "none") is None


def test_shipped_adapter_writes_the_layout_the_base_model_does_not(monkeypatch, analyses):
    """Greedy answers to the same real evidence prompt, with and without the adapter."""
    from agent.backends import TransformersBackend
    from agent.graph import build_messages

    monkeypatch.delenv(ENV_ADAPTER, raising=False)
    analysis = analyses("single_face.mp4", fps=5)
    msgs = build_messages(analysis, analysis.tracks[0].track_id)
    tuned = TransformersBackend.load(None).generate(msgs, max_new_tokens=24)
    base = TransformersBackend.load(None, adapter="none").generate(msgs, max_new_tokens=24)
    assert tuned.text != base.text
    assert tuned.text.lstrip().startswith("**Key Observations:**")
