"""Smoke training runs: SFT and GRPO on the real SmolLM2 asset and on a tiny random
Qwen2-VL, the evaluation/report path, resuming, merging and combining adapters.

A few steps on tiny data: these check the code paths and that weights move, not
the quality of the result (that is docs/training.md's table, from `make train`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from agent import models
from finetune import config as C
from finetune import grpo, recipe, sft
from finetune.data import builder


def _paths(cfg: dict, root: Path) -> dict:
    """A config with its out/smoke/... paths moved under root."""
    text = json.dumps(cfg).replace("out/smoke", str(root))
    return json.loads(text)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    cfg = C.load("recipe_smoke")
    cfg = {k: (_paths(C.load(v), root) if isinstance(v, str) else _paths(v, root))
           for k, v in cfg.items() if not k.startswith("_")}
    result = recipe.run(cfg)
    return root, cfg, result


def _lora_b(adapter: Path) -> list[torch.Tensor]:
    from safetensors.torch import load_file

    w = load_file(str(adapter / "adapter_model.safetensors"))
    return [v for k, v in w.items() if "lora_B" in k]


@pytest.mark.slow
def test_smoke_recipe_trains_every_stage(smoke):
    root, cfg, result = smoke
    sft_dir, grpo_dir = Path(result["outputs"]["sft"]), Path(result["outputs"]["grpo"])
    # LoRA B starts at zero: non-zero B means SFT took optimizer steps.
    assert any(b.abs().sum() > 0 for b in _lora_b(sft_dir))
    log = json.loads((root / "sft" / "log_history.json").read_text())
    assert log["steps"] == cfg["sft"]["sft"]["max_steps"]
    assert all(np.isfinite(h["loss"]) for h in log["log_history"] if "loss" in h)
    g = json.loads((root / "grpo" / "log_history.json").read_text())
    logged = [h for h in g["log_history"] if "reward" in h][0]
    for name in ("format", "label", "au", "faithfulness", "caption_order"):
        assert f"rewards/{name}_reward/mean" in logged
    assert (grpo_dir / "adapter_config.json").is_file()
    table = json.loads((root / "eval" / "eval.json").read_text())
    assert set(table["systems"]) == {"base", "engine", "sft", "grpo"}
    # The engine is scored by the same code as the models: its text is valid and faithful.
    eng = table["systems"]["engine"]["synthetic held-out"]
    assert eng["format_validity"] == 1.0 and eng["faithfulness"] == 1.0
    report = Path(result["outputs"]["report"]).read_text()
    assert "| SFT+GRPO |" in report
    png = root / "training_sft_loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The ship stage copied the GRPO adapter with the ship rule's verdict on this run's table.
    shipped = Path(result["outputs"]["ship"])
    assert shipped == root / "shipped" and (shipped / "adapter_model.safetensors").is_file()
    verdict = json.loads((shipped / "ship.json").read_text())
    assert verdict["system"] == "grpo" and verdict["default"] is (not verdict["reasons"])


@pytest.mark.slow
def test_adapter_changes_outputs_and_merge_matches(smoke, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.merge import merge

    root, _, result = smoke
    adapter = Path(result["outputs"]["sft"])
    base_path = models.resolve_model(None)
    tok = AutoTokenizer.from_pretrained(base_path)
    ids = tok("Key Observations: AU12 at 2.0 s", return_tensors="pt")
    base = AutoModelForCausalLM.from_pretrained(base_path)
    with torch.no_grad():
        ref = base(**ids).logits
    tuned = PeftModel.from_pretrained(base, str(adapter))
    with torch.no_grad():
        out = tuned(**ids).logits
    assert (out - ref).abs().max() > 1e-3
    merged_dir = merge(adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    with torch.no_grad():
        m = merged(**ids).logits
    assert torch.allclose(m, out, atol=1e-4)
    assert not list(merged_dir.glob("adapter_*"))
    stop = merged.generation_config.eos_token_id
    stop = stop if isinstance(stop, list) else [stop]
    assert tok.convert_tokens_to_ids("<|im_end|>") in stop


@pytest.mark.slow
def test_sft_resumes_from_its_last_checkpoint(smoke):
    root, cfg, _ = smoke
    sub = dict(cfg["sft"])
    sub["sft"] = {**sub["sft"], "max_steps": 3}
    sft.train(sub)
    log = json.loads((root / "sft" / "log_history.json").read_text())
    assert log["resumed_from"].endswith("checkpoint-2") and log["steps"] == 3


@pytest.mark.slow
def test_sft_continues_an_adapter(smoke, tmp_path):
    """init_adapter: a second SFT run starts from the first adapter's weights, not a fresh
    LoRA (whose B is zero). At learning rate 0 the step changes nothing, so the saved
    adapter is the one it started from."""
    _, cfg, result = smoke
    first = Path(result["outputs"]["sft"])
    sub = {**cfg["sft"], "init_adapter": str(first), "output_dir": str(tmp_path / "sft2"),
           "sft": {**cfg["sft"]["sft"], "max_steps": 1, "learning_rate": 0.0}}
    before, after = _lora_b(first), _lora_b(sft.train(sub))
    assert len(before) == len(after) and any(b.abs().sum() > 0 for b in before)
    assert all(torch.equal(a, b) for a, b in zip(after, before, strict=True))
    with pytest.raises(C.TrainingConfigError, match="init_adapter"):
        sft.train({**sub, "init_adapter": str(tmp_path / "none")})


def test_oversample_repeats_only_the_named_scenarios():
    from datasets import Dataset

    ds = Dataset.from_dict({"scenario": ["single", "crying", "single", "crying_then_laughing"],
                            "messages": ["a", "b", "c", "d"]})
    out = sft.oversample(ds, {"crying_then_laughing": 3, "crying": 2})
    assert sorted(out["messages"]) == ["a", "b", "b", "c", "d", "d", "d"]
    assert sft.oversample(ds, None) is ds
    with pytest.raises(C.TrainingConfigError, match="laughing_only"):
        sft.oversample(ds, {"laughing_only": 2})


@pytest.mark.slow
def test_grpo_in_processes_resumes_until_done(smoke, tmp_path):
    """`process_steps: 1` runs two GRPO processes; the second resumes the first's checkpoint."""
    _, cfg, _ = smoke
    sub = {**cfg["grpo"], "output_dir": str(tmp_path / "grpo"), "process_steps": 1,
           "grpo": {**cfg["grpo"]["grpo"], "max_steps": 2, "save_steps": 1, "save_total_limit": 2}}
    adapter = grpo.train_in_processes(sub)
    assert (adapter / "adapter_config.json").is_file()
    log = json.loads((tmp_path / "grpo" / "log_history.json").read_text())
    assert log["steps"] == 2 and log["resumed_from"].endswith("checkpoint-1")


@pytest.mark.slow
def test_combined_adapter_equals_both_applied(smoke, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, _, result = smoke
    first, second = Path(result["outputs"]["sft"]), Path(result["outputs"]["grpo"])
    base_path = models.resolve_model(None)
    both = grpo.combine_adapters(base_path, first, second, tmp_path / "combined")
    ids = torch.tensor([[1, 400, 2000, 30, 7]])
    m = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(first)).merge_and_unload()
    m = PeftModel.from_pretrained(m, str(second)).merge_and_unload()
    c = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(both))
    with torch.no_grad():
        assert torch.allclose(m(ids).logits, c(ids).logits, atol=1e-4)


@pytest.mark.slow
def test_vlm_sft_and_grpo_on_tiny_qwen2_vl(tmp_path, media):
    from datasets import Dataset, DatasetDict
    from PIL import Image
    from test_agent_vlm import build_tiny_qwen2_vl  # the agent tests' offline tiny Qwen2-VL

    from finetune.data import synthetic

    model = build_tiny_qwen2_vl(tmp_path / "tiny")
    img = Image.open(media("single_face.jpg")).convert("RGB").resize((112, 112))
    rows = []
    for seed in (1, 2):
        a, exs = synthetic.make_clip(seed, scenario="single")
        (r,) = builder.records(a, exs[0].track_id, id=exs[0].id, source="synthetic",
                               clip_id=exs[0].clip_id, identity=exs[0].identity, label=exs[0].label,
                               aus=exs[0].aus, segment_order=exs[0].segment_order, questions=0)
        rows.append(builder.with_key_frames(r, [img]))
    keep = ["messages", "images", "kind", "label", "aus", "segment_order", "analysis", "track_id"]
    ds = Dataset.from_list([{k: r[k] for k in keep} | {"prompt": r["messages"][:2]} for r in rows])
    DatasetDict(train=ds, test=ds).save_to_disk(str(tmp_path / "data"))
    adapter = sft.train({"model": str(model), "data": str(tmp_path / "data"), "output_dir": str(tmp_path / "sft"),
                         "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]},
                         "sft": {"max_steps": 1, "per_device_train_batch_size": 1, "max_length": None,
                                 "use_cpu": True, "save_strategy": "no", "learning_rate": 1e-2}})
    assert any(b.abs().sum() > 0 for b in _lora_b(adapter))
    out = grpo.train({"model": str(model), "adapter": str(adapter), "data": str(tmp_path / "data"),
                      "output_dir": str(tmp_path / "grpo"),
                      "grpo": {"max_steps": 1, "per_device_train_batch_size": 2, "num_generations": 2,
                               "max_completion_length": 8, "use_cpu": True, "save_strategy": "no"}})
    assert (out / "adapter_config.json").is_file()
    assert (out / "preprocessor_config.json").is_file() or (out / "processor_config.json").is_file()


def test_training_template_renders_identically_and_masks_assistant_turns():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models.resolve_model(None))
    rows = list(builder.synthetic_dataset(3, seed=5, test_share=0.0, tool_share=1.0)["train"])
    path = sft.training_template(tok, rows)
    assert path == str(sft.CHATML_TRAINING)
    msgs = next(r["messages"] for r in rows if len(r["messages"]) == 5)
    enc = tok.apply_chat_template(msgs, chat_template=Path(path).read_text(), return_dict=True,
                                  return_assistant_tokens_mask=True)
    kept = tok.decode([i for i, k in zip(enc["input_ids"], enc["assistant_masks"], strict=True) if k])
    assert kept == msgs[2]["content"] + "<|im_end|>" + msgs[4]["content"] + "<|im_end|>"


def test_config_errors_name_the_problem(tmp_path):
    from trl import SFTConfig

    with pytest.raises(C.TrainingConfigError, match="no training config"):
        C.load("no_such_config")
    with pytest.raises(C.TrainingConfigError, match="unknown SFTConfig option.*max_stepz"):
        C.trl_args(SFTConfig, {"max_stepz": 2}, output_dir=str(tmp_path))
    cfg = C.load("sft_smoke", ["sft.max_steps=5", "lora.r=2"])
    assert cfg["sft"]["max_steps"] == 5 and cfg["lora"]["r"] == 2
    # "1e-4" is a number (YAML alone reads it as a string, which the optimizer refused)
    cfg = C.load("sft_smoke", ["sft.learning_rate=1e-4", "output_dir=1e-4x", "skip=[base]"])
    assert cfg["sft"]["learning_rate"] == 1e-4 and cfg["output_dir"] == "1e-4x" and cfg["skip"] == ["base"]
    with pytest.raises(C.TrainingConfigError, match="key=value"):
        C.load("sft_smoke", ["sft.max_steps"])
    with pytest.raises(builder.TrainingDataError, match="no dataset"):
        sft.train("sft_smoke", [f"data={tmp_path / 'missing'}"])


def test_cli_builds_a_synthetic_dataset(tmp_path, capsys):
    from agent.cli import main

    assert main(["train", "data", "--out", str(tmp_path / "d"), "--n-clips", "3", "--seed", "2",
                 "--test-share", "0"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    dsd = builder.load(tmp_path / "d")
    assert info["train"] == len(dsd["train"]) >= 3 and info["test"] == 0
    # A bad request is a sentence, not a traceback.
    assert main(["train", "sft", "--config", "no_such_config"]) == 2
    assert "no training config" in capsys.readouterr().err


def test_grpo_prompts_mix_in_faces_the_rules_read_wrong():
    """`override_share` fills part of GRPO's prompts with faces whose rule-based reading (shown
    in the prompt) is wrong, spread out: there only the reward can teach the override."""
    ds = builder.synthetic_dataset(16, seed=3, test_share=0.0, question_share=0.0)["train"]
    wrong = {r["id"] for r in ds if grpo.rule_is_wrong(r)}
    assert 2 <= len(wrong) < len(ds)  # the generator's confusers fool the rules on some faces
    picked = grpo._mix_overrides(ds, 0.5, 4)
    flags = [r["id"] in wrong for r in picked]
    assert len(picked) == 4 and sum(flags) == 2
    assert flags != sorted(flags) and flags != sorted(flags, reverse=True)  # interleaved
    prompts = grpo._prompts(ds, 4, False, 0.5)
    assert set(prompts.column_names) == set(grpo.REWARD_COLUMNS)
    assert prompts["label"] == picked["label"]
    # Asking for more than exist takes them all and fills up with the others.
    every = grpo._mix_overrides(ds, 1.0, len(ds))
    assert sorted(every["id"]) == sorted(ds["id"])


def test_train_seconds_sums_steps_across_resumed_processes():
    from finetune.report import train_seconds

    # A chain of two processes: the log history carries both, wall_s only the last.
    log = {"wall_s": 30.0, "steps": 3, "log_history": [
        {"step": 1, "step_time": 10.0}, {"step": 2, "step_time": 12.5},
        {"step": 3, "step_time": 11.0}, {"step": 3, "train_runtime": 29.0}]}
    assert train_seconds(log) == pytest.approx(33.5)
    assert train_seconds({"wall_s": 42.0, "steps": 2, "log_history": [{"loss": 1.0}]}) == 42.0


def test_confuser_set_is_its_own_even_spread(tmp_path):
    from finetune import evaluate

    builder.save(builder.synthetic_dataset(16, seed=3, test_share=0.5), tmp_path / "d")
    test = [r for r in builder.load(tmp_path / "d")["test"] if r["kind"] == "decide"]
    n_conf = sum(r["confuser"] for r in test)
    assert n_conf >= 2
    held, conf, answers = evaluate.synthetic_rows(tmp_path / "d", 3, n_conf, answer_rows=2)
    assert len(held) == 3 and len(conf) == n_conf and all(r["confuser"] for r in conf)
    assert all(r["kind"] == "decide" for r in held + conf) and [r["kind"] for r in answers] == ["answer"] * 2
    ids = {r["id"]: r for r in held}
    assert all(r is ids[r["id"]] for r in conf if r["id"] in ids)  # one dict per face
    held2, conf2, _ = evaluate.synthetic_rows(tmp_path / "d", 3)
    assert conf2 == [r for r in held2 if r["confuser"]]


def test_ship_rule_compares_against_the_engine():
    from finetune import evaluate

    def table(model_label, model_faithful):
        m = {"label_accuracy": model_label, "caption_order": 0.7, "faithfulness": model_faithful}
        e = {"label_accuracy": 0.6, "caption_order": 0.7, "faithfulness": 1.0}
        return {"systems": {"engine": {"a": e, "b": e}, "grpo": {"a": m, "b": m}}}

    assert evaluate.ship_check(table(0.6, 1.0)) == (True, [])
    ok, why = evaluate.ship_check(table(0.5, 1.0))
    assert not ok and "label_accuracy 0.50 < engine 0.60" in why[0]
    ok, why = evaluate.ship_check(table(0.7, 0.9))
    assert not ok and "faithful 0.90" in why[0]


def test_ship_refuses_an_adapter_worse_than_the_engine(tmp_path):
    """`facereason train ship` writes the default reasoner only if the run's table passes."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from finetune import report

    models.compat()
    adapter = tmp_path / "adapter"
    base = AutoModelForCausalLM.from_pretrained(models.resolve_model(None))
    get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(adapter)
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    worse = {"label_accuracy": 0.5, "caption_order": 0.7, "faithfulness": 1.0}
    engine = {"label_accuracy": 0.6, "caption_order": 0.7, "faithfulness": 1.0}
    (run / "eval" / "eval.json").write_text(json.dumps(
        {"systems": {"engine": {"real media": engine}, "grpo": {"real media": worse}}}))
    dest = tmp_path / "models" / "lora"
    with pytest.raises(C.TrainingConfigError, match="not at or above the engine.*label_accuracy 0.50"):
        report.ship(adapter, dest, run)
    assert not dest.exists()
    # Opt-in: shipped, but the verdict says it is not the default (--backend auto keeps the engine).
    report.ship(adapter, dest, run, opt_in=True)
    verdict = json.loads((dest / "ship.json").read_text())
    assert verdict["default"] is False and "label_accuracy 0.50" in verdict["reasons"][0]
    assert verdict["chat"] is False and "not evaluated" in verdict["chat_reasons"][0]  # no follow-ups run
    assert (report.ship(adapter, dest, run, force=True) / "adapter_model.safetensors").is_file()
    assert json.loads((dest / "ship.json").read_text())["default"] is True


def test_real_follow_ups_score_the_answer_time_and_label_and_gate_the_chat():
    """finetune/followups.py: the rules' answers on a face whose smile starts at 1.9 s, scored
    against windows; the chat rule compares a model with the rules on both follow-up sets."""
    from agent_synthetic import make_analysis

    from finetune import followups

    a = make_analysis(faces=1)
    row = {"id": "clip.mp4", "analysis": a.to_json(), "track_id": 0}
    items = [{"id": "clip.mp4", "row": row, "q": "What happens at second 3?", "time": [2.5, 3.5],
              "label": "happiness"},
             {"id": "clip.mp4", "row": row, "q": "When does the person start smiling?",
              "time": [1.5, 2.4], "label": "happiness"},
             {"id": "clip.mp4", "row": row, "q": "What happens at second 0.5?", "time": [3.0, 4.0]}]
    outs = followups.rule_outcomes(items)
    assert all(o["fallback"] for o in outs) and outs[0]["times"][0] == 3.0
    s = followups.score(items, outs)
    assert s["n"] == 3 and s["time"] == pytest.approx(2 / 3) and s["correct"] == pytest.approx(2 / 3)
    table = {"answers": {"engine": {"correct": 0.2}, "sft": {"correct": 0.9}},
             "real_answers": {"engine": {"correct": 0.8}, "sft": {"correct": 0.6}}}
    ok, why = followups.chat_check(table, "sft")
    assert not ok and why == ["real follow-ups: correct 0.60 < rules 0.80"]
    table["real_answers"]["sft"]["correct"] = 0.8
    assert followups.chat_check(table, "sft") == (True, [])
    assert not followups.chat_check(table, "grpo")[0]
    # "When does she stop smiling?" is scored where the cited stretch ends (the smile runs
    # 2.0-6.0 s): its start, 2.0 s, is in the first window and not the second
    stop = {"id": "clip.mp4", "row": row, "q": "When does the person stop smiling?"}
    outs = followups.rule_outcomes([stop])
    assert outs[0]["spans"] == [[2.0, 6.0]]
    assert followups.score([{**stop, "end": [5.5, 6.5]}], outs)["time"] == 1.0
    assert followups.score([{**stop, "end": [1.5, 2.5]}], outs)["time"] == 0.0
    # "no longer" negates a claim, but the question asks where that reading ends: the
    # rest (0.0-1.9 s) is cited, not the longest stretch (the smile)
    outs = followups.rule_outcomes([{**stop, "q": "When is she no longer neutral?"}])
    assert outs[0]["spans"] == [[0.0, 1.9]] and outs[0]["label"] == "neutral"
    assert outs[0]["text"].startswith("The last stretch of neutral ends at about 1.9 s.")


def test_held_out_follow_ups_run_on_the_chats_schemas(tmp_path):
    """The evaluation's answer tasks carry their question, so the model is scored on the
    chat's own path: a question about a time must look there first, and one about a
    reading the face never shows admits only the absent answer. Before session 14 they ran
    without it (every question-dependent schema off)."""
    from jsonschema import Draft202012Validator

    from finetune import evaluate

    builder.save(builder.synthetic_dataset(40, seed=5, test_share=0.5, question_share=1.0), tmp_path / "d")
    rows = [r for r in builder.load(tmp_path / "d")["test"] if r["kind"] == "answer"]
    tasks = evaluate._tasks(rows)
    kinds = set()
    for r, t in zip(rows, tasks, strict=True):
        assert t.question and r["messages"][1]["content"].endswith(t.question)
        target = json.loads(r["messages"][-1]["content"])
        if target.get("note", "").startswith("No stretch of this face reads as"):
            kinds.add("absent")
            ok = Draft202012Validator(t.final_schema()).is_valid
            assert ok(target) and not ok({**target, "label": "anger"}), t.question
        if "tool" in r["messages"][2]["content"] and '"moment"' in r["messages"][2]["content"]:
            kinds.add("moment")
            assert t.request().schema["anyOf"][0]["properties"]["tool"] == {"const": "moment"}, t.question
    assert kinds == {"absent", "moment"}
