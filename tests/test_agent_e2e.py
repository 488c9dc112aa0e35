"""End to end with the real SmolLM2-135M-Instruct asset on real media.

Before fine-tuning the base model rarely follows the layout; whatever it does,
the result must be a valid explanation that says whether it fell back.
"""

from __future__ import annotations

import json

import pytest

from agent import ChatSession, chat, explain
from agent.faithfulness import check
from agent.schema import HEADERS, parse_explanation


@pytest.fixture(scope="module")
def single(media):
    tokens: list[str] = []
    r = explain(media("single_face.mp4"), fps=8, on_token=tokens.append, max_new_tokens=160)
    return r, tokens


@pytest.mark.slow
def test_explain_single_face_with_real_model(single):
    r, tokens = single
    assert r.backend == "transformers" and r.model.startswith("smollm2-135m")
    assert len(r.explanations) == len(r.analysis.tracks) >= 1
    gens = r.stats["generations"]
    assert gens and all(g["tokens"] > 0 for g in gens)
    assert tokens and "".join(tokens).strip()  # the model's tokens were streamed
    for e in r.explanations:
        if e.fallback_used:
            assert e.fallback_reason
        assert e.unfaithful_claims == check(e, r.analysis)
        assert e.conclusion.label in r.analysis.emotion_labels
    for h in HEADERS:
        assert h in r.text
    reparsed = parse_explanation(r.text, r.analysis.emotion_labels)
    assert reparsed.conclusion.label == r.explanations[0].conclusion.label
    for key in ("perception_s", "model_load_s", "generation_s", "total_s", "tokens_per_s"):
        assert r.timings[key] >= 0


@pytest.mark.slow
def test_chat_follow_ups_with_real_model(single):
    r, _ = single
    s = ChatSession.start(r)
    t = r.analysis.tracks[0]
    moment = round((t.start + t.end) / 2, 1)
    a = chat(s, f"what happens at second {moment}?")
    assert a.tool_calls and a.tool_calls[0]["name"] == "time_window"
    assert a.frame_time is not None and t.start <= a.frame_time <= t.end
    assert moment in a.cited_times or a.fallback_used
    assert a.unfaithful_claims == []
    b = chat(s, "is he really smiling?")
    assert b.text.strip() and len(s.history) == 4


@pytest.mark.slow
def test_no_face_video_is_a_message(media):
    r = explain(media("no_face.mp4"), fps=4)
    assert r.explanations == [] and r.message and r.text == r.message


@pytest.mark.slow
def test_cli_explain_real_image(media, tmp_path, capsys):
    from agent.cli import main

    out = tmp_path / "e.json"
    assert main(["explain", str(media("single_face.jpg")), "--json", str(out)]) == 0
    printed = capsys.readouterr()
    assert "**Conclusion:**" in printed.out
    data = json.loads(out.read_text())
    assert data["explanations"] and data["analysis"]["source"]["kind"] == "image"
    assert data["explanations"][0]["caption"]


def test_missing_file_is_a_clear_error(capsys):
    from agent.cli import main

    assert main(["explain", "/nonexistent/clip.mp4", "--backend", "openai",
                 "--base-url", "http://127.0.0.1:9"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.slow
def test_peft_adapter_loads_on_the_default_model(tmp_path, monkeypatch):
    # A freshly initialised LoRA (B = 0) leaves outputs unchanged but exercises the
    # whole adapter path: save, resolve, PeftModel.from_pretrained, generate.
    from tools.torchvision_compat import ensure

    ensure()
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    from agent.backends import BackendError, TransformersBackend, resolve_adapter
    from tools import assets

    base = AutoModelForCausalLM.from_pretrained(assets.model_dir())
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    adapter = tmp_path / "facereason-smollm2-lora"
    lora.save_pretrained(adapter)
    be = TransformersBackend.load(None, adapter=adapter)
    assert isinstance(be.model, PeftModel) and be.model_id.endswith("+facereason-smollm2-lora")
    msgs = [{"role": "user", "content": "Say hello."}]
    g = be.generate(msgs, max_new_tokens=6)
    plain = TransformersBackend.load(None, adapter="none").generate(msgs, max_new_tokens=6)
    assert g.text == plain.text  # B = 0: the adapter adds nothing yet
    # The default-adapter hook: $FACEREASON_ADAPTER, and a clear error for a wrong folder.
    monkeypatch.setenv("FACEREASON_ADAPTER", str(adapter))
    assert resolve_adapter(None, None) == str(adapter)
    with pytest.raises(BackendError, match="not a PEFT adapter"):
        resolve_adapter(None, tmp_path)
