"""The evaluation table: base model, Exp-CoT engine, SFT and SFT+GRPO on held-out data.

    facereason train eval --config eval_smollm2

Sets: the held-out synthetic split (identities never seen in training), its
hard confusers alone, and the real test media with our own labels
(finetune/data/real_labels.yaml). Every model answers the agent's own opening
turns (agent.graph.build_messages) greedily, may make one tool call that the
agent's toolbox answers, and is scored on its raw text: no engine fallback,
so a model that breaks the layout loses the row.

Metrics: label accuracy and macro-F1 (evals.classification.emotion_metrics),
AU F1 of the cited AUs against the true AUs (mean over rows that have true
AUs), faithfulness (share of rows answered with a parsable explanation that
has zero unfaithful claims by agent.faithfulness.check), format validity
(finetune.rewards.format_reward = 1) and the caption-order score (finetune.rewards.caption_order_reward).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
import yaml

import tools  # noqa: F401  (torchvision workaround before transformers/peft)
from finetune import config as C
from finetune import rewards

SYSTEMS = ("base", "engine", "sft", "grpo")
REAL_LABELS = Path(__file__).resolve().parent / "data" / "real_labels.yaml"
METRICS = ("label_accuracy", "macro_f1", "au_f1", "faithfulness", "format_validity", "caption_order")


# ------------------------------------------------------------------ rows
def real_rows(cache_dir: str | Path, fps: float = 8.0) -> list[dict]:
    """Rows for the real test media with our labels (analysed once, cached by content hash)."""
    from finetune.data import adapters
    from tools import assets

    labels = yaml.safe_load(REAL_LABELS.read_text())
    items = [adapters.Item(media=str(assets.media(name)), id=name, label=v["label"], aus=v["aus"],
                           identity=name, source="real")
             for name, v in labels.items()]
    ds = adapters.build_dataset(items, cache_dir, fps=fps, test_share=0.0, tool_share=0.0)
    rows = list(ds["train"])
    for r in rows:
        r["segment_order"] = labels[r["id"]].get("segment_order", [r["label"]])
    return rows


def synthetic_rows(data: str | Path, max_rows: int | None) -> list[dict]:
    from finetune.data import builder

    test = builder.load(data)["test"]
    # Keep the confusers' share as it is, but take an even spread of the rows.
    idx = np.linspace(0, len(test) - 1, min(max_rows or len(test), len(test))).round().astype(int)
    return [test[int(i)] for i in sorted(set(idx.tolist()))]


# ------------------------------------------------------------------ answers
def engine_answers(rows: list[dict]) -> list[str]:
    from agent import engine
    from tools.analysis import Analysis

    out = []
    for r in rows:
        a = Analysis.from_json(r["analysis"])
        out.append(engine.explain_track(a, a.track(r["track_id"])).to_text())
    return out


@functools.cache
def _load(model_path: str, adapter: str | None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    return model, tok


def _generate(model, tok, conversations: list[list[dict]], max_new_tokens: int,
              batch_size: int) -> list[str]:
    import torch

    out: list[str] = []
    for i in range(0, len(conversations), batch_size):
        texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                 for c in conversations[i:i + batch_size]]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        out += tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return out


def model_answers(rows: list[dict], model_path: str, adapter: str | None, max_new_tokens: int = 480,
                  batch_size: int = 4, tool_rounds: int = 1) -> list[str]:
    """Each row's final answer; a tool call is answered by the agent's toolbox, then asked again."""
    from agent.backends import text_messages
    from agent.toolbox import Toolbox, parse_tool_calls
    from tools.analysis import Analysis

    model, tok = _load(model_path, adapter)
    convs = [list(r["messages"][:2]) for r in rows]  # the opening turns, as the agent starts
    answers = _generate(model, tok, convs, max_new_tokens, batch_size)
    for _ in range(tool_rounds):
        again = []
        for k, (r, text) in enumerate(zip(rows, answers, strict=True)):
            parsed = parse_tool_calls(text)
            if parsed.calls and "Key Observations" not in text:
                a = Analysis.from_json(r["analysis"])
                box = Toolbox(a, default_track=r["track_id"])
                results = [{"role": "tool", "content": box.run(c)} for c in parsed.calls[:1]]
                convs[k] = convs[k] + text_messages([{"role": "assistant", "content": text}, *results])
                again.append(k)
        if not again:
            break
        redo = _generate(model, tok, [convs[k] for k in again], max_new_tokens, batch_size)
        for k, text in zip(again, redo, strict=True):
            answers[k] = text
    return answers


# ------------------------------------------------------------------ scoring
def score(rows: list[dict], texts: list[str]) -> dict:
    """The table's metrics for one system on one set of rows."""
    from agent import faithfulness
    from agent.schema import ParseError, parse_explanation
    from evals.classification import emotion_metrics
    from tools.analysis import Analysis

    if not rows:
        return {m: None for m in METRICS} | {"n": 0}
    preds, au_f1, faithful = [], [], []
    for r, text in zip(rows, texts, strict=True):
        try:
            e = parse_explanation(text, track_id=r["track_id"])
        except (ParseError, ValueError):
            preds.append("invalid")
            faithful.append(False)  # no explanation: nothing it says can be trusted
            if r["aus"]:
                au_f1.append(0.0)
            continue
        preds.append(e.conclusion.label)
        if r["aus"]:
            au_f1.append((rewards.au_reward([text], aus=[r["aus"]])[0] + 1) / 2)
        a = Analysis.from_json(r["analysis"])
        faithful.append(not faithfulness.check(e, a))
    cls = emotion_metrics([r["label"] for r in rows], preds)
    fmt = rewards.format_reward(texts)
    order = rewards.caption_order_reward(texts, segment_order=[r["segment_order"] for r in rows])
    return {"n": len(rows), "label_accuracy": cls["accuracy"], "macro_f1": cls["macro_f1"],
            "au_f1": float(np.mean(au_f1)) if au_f1 else None,
            "faithfulness": float(np.mean(faithful)),
            "format_validity": float(np.mean([f == 1.0 for f in fmt])),
            "caption_order": float(np.mean(order))}


def evaluate(cfg_or_path: str | Path | dict, overrides: list[str] | dict | None = None) -> dict:
    """Answers of every configured system on every set, scored; written to output_dir/eval.json."""
    from agent.backends import resolve_model

    cfg = C.load(cfg_or_path, overrides)
    out = Path(cfg.get("output_dir", "out/eval"))
    out.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[dict]] = {}
    syn = synthetic_rows(cfg["data"], cfg.get("max_rows"))
    sets["synthetic held-out"] = syn
    sets["hard confusers"] = [r for r in syn if r["confuser"]]
    if cfg.get("real_media", True):
        sets["real media"] = real_rows(cfg.get("cache_dir", "out/cache"))
    model_path = resolve_model(cfg.get("model"))
    systems = {"base": None, "engine": None, **{k: cfg.get(k) for k in ("sft", "grpo") if cfg.get(k)}}
    gen = cfg.get("generation", {})
    all_rows = syn + sets.get("real media", [])
    table: dict = {"sets": {k: len(v) for k, v in sets.items()}, "systems": {}, "timing_s": {}}
    answers: dict[str, list[str]] = {}
    for name, adapter in systems.items():
        t0 = time.time()
        if name == "engine":
            answers[name] = engine_answers(all_rows)
        else:
            answers[name] = model_answers(all_rows, model_path, adapter, **gen)
        table["timing_s"][name] = round(time.time() - t0, 1)
        ids = {id(r): k for k, r in enumerate(all_rows)}
        table["systems"][name] = {
            set_name: score(rows, [answers[name][ids[id(r)]] for r in rows])
            for set_name, rows in sets.items()}
    (out / "eval.json").write_text(json.dumps(table, indent=1))
    with (out / "answers.jsonl").open("w") as fh:
        for k, r in enumerate(all_rows):
            fh.write(json.dumps({"id": r["id"], "label": r["label"],
                                 **{s: answers[s][k] for s in answers}}) + "\n")
    (out / "table.md").write_text(markdown_table(table))
    return table


def markdown_table(table: dict) -> str:
    """One markdown table per set: systems as rows, the six metrics as columns."""
    names = {"base": "base SmolLM2", "engine": "Exp-CoT engine", "sft": "SFT", "grpo": "SFT+GRPO"}
    heads = ["label acc.", "macro-F1", "AU F1", "faithful", "format", "caption order"]
    parts = []
    for set_name, n in table["sets"].items():
        parts.append(f"**{set_name}** ({n} faces)\n")
        parts.append("| system | " + " | ".join(heads) + " |")
        parts.append("|---" * (len(heads) + 1) + "|")
        for sysname, by_set in table["systems"].items():
            m = by_set[set_name]
            cells = ["–" if m.get(k) is None else f"{m[k]:.2f}" for k in METRICS]
            parts.append(f"| {names.get(sysname, sysname)} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)
