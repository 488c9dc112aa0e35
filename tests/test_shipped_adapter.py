"""The shipped LoRA adapter (agent/adapters/facereason-smollm2-lora): small, fp16, used by
default, and it changes what the model decides (the base model is untrained for it)."""

from __future__ import annotations

import json

from agent import models
from agent.models import DEFAULT_ADAPTER, ENV_ADAPTER, resolve_adapter


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
    assert "| Exp-CoT engine |" in card and "base_model:" in card


def test_the_default_follows_the_ship_rule_on_the_shipped_evaluation(monkeypatch):
    """`--backend auto` uses the adapter only if its own evaluation table passes the rule."""
    from agent.backends import resolve_backend
    from finetune.evaluate import ship_check

    monkeypatch.delenv(ENV_ADAPTER, raising=False)
    assert resolve_adapter(None, None) == str(DEFAULT_ADAPTER)  # --backend transformers
    assert resolve_adapter(None, "none") is None
    verdict = json.loads((DEFAULT_ADAPTER / "ship.json").read_text())
    ok, why = ship_check(json.loads((DEFAULT_ADAPTER / "eval.json").read_text()), verdict["system"])
    assert verdict["default"] == ok and verdict["reasons"] == why
    assert resolve_backend("auto") == ("transformers" if ok else "engine")
    # The chat has its own rule, on the same table (finetune.followups.chat_check).
    from agent.models import chat_ships_as_default
    from finetune.followups import chat_check

    chat_ok, chat_why = chat_check(json.loads((DEFAULT_ADAPTER / "eval.json").read_text()), verdict["system"])
    assert verdict["chat"] == (ok and chat_ok) and verdict["chat_reasons"] == chat_why
    assert chat_ships_as_default() == verdict["chat"]


def test_shipped_adapter_decides_what_the_base_model_does_not(monkeypatch, analyses):
    """Greedy records for the same real evidence prompt, with and without the adapter."""
    from agent import evidence as ev
    from agent.decision import decision_schema, parse_decision
    from agent.graph import decide_messages
    from agent.transformers_backend import TransformersBackend

    monkeypatch.delenv(ENV_ADAPTER, raising=False)
    a = analyses("single_face.mp4", fps=8)
    t = a.tracks[0]
    f = ev.facts(a, t)
    msgs, schema = decide_messages(a, t.track_id), decision_schema(f, a.emotion_labels)
    tuned = TransformersBackend.load(None).generate(msgs, schema=schema)
    base = TransformersBackend.load(None, adapter="none").generate(msgs, schema=schema)
    assert tuned.text != base.text
    d = parse_decision(tuned.text, f, a.emotion_labels)
    assert d.label == "happiness"  # a man breaking into a broad smile
    assert {f.events[i].au for i in d.cite} & {"AU06", "AU12"}


def test_the_shipped_adapter_merged_once_is_kept_and_loads_the_same(tmp_path, monkeypatch):
    """agent/models.py keeps the shipped adapter's merged weights: the second load reads
    them without peft, and they are the weights the merge gave."""
    import peft
    import torch

    from tools import assets

    path = models.resolve_model(None)
    monkeypatch.setattr(assets, "home", lambda: tmp_path)
    adapter = str(models.DEFAULT_ADAPTER)
    merged, _ = models.load(path, adapter=adapter, merge=True)
    kept = models.merged_cache(path, adapter, "float32")
    assert kept.is_relative_to(tmp_path) and (kept / "model.safetensors").is_file()

    def no_peft(*_, **__):
        raise AssertionError("the kept merge was not used")

    monkeypatch.setattr(peft.PeftModel, "from_pretrained", no_peft)
    again, _ = models.load(path, adapter=adapter, merge=True)
    a, b = merged.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    base = models.load(path)[0].state_dict()
    assert not all(torch.equal(base[k], a[k]) for k in a if "q_proj" in k)  # the LoRA is in them
    # only the shipped adapter is kept, and only for inference in fp32
    assert models.merged_cache(path, str(tmp_path), "float32") is None
    assert models.merged_cache(path, adapter, "bfloat16") is None
