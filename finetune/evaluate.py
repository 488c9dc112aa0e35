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
import hashlib
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


def _spread(rows: list[dict], n: int | None) -> list[dict]:
    """An even spread of `n` rows (all when n is None), in order."""
    if not rows:
        return []
    idx = np.linspace(0, len(rows) - 1, min(n or len(rows), len(rows))).round().astype(int)
    return [rows[int(i)] for i in sorted(set(idx.tolist()))]


def synthetic_rows(data: str | Path, max_rows: int | None,
                   confuser_rows: int | None = None) -> tuple[list[dict], list[dict]]:
    """(held-out rows, hard-confuser rows): an even spread of the held-out split (the
    confusers' share kept as it is), and of its confusers alone when `confuser_rows` is set
    (else the confusers among the first set). Rows in both sets are the same dicts."""
    from finetune.data import builder

    test = list(builder.load(data)["test"])
    held = _spread(test, max_rows)
    if not confuser_rows:
        return held, [r for r in held if r["confuser"]]
    by_id = {r["id"]: r for r in held}
    conf = [by_id.get(r["id"], r) for r in _spread([r for r in test if r["confuser"]], confuser_rows)]
    return held, conf


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
                  batch_size: int = 4, tool_rounds: int = 1, cache: str | Path | None = None) -> list[str]:
    """Each row's final answer; a tool call is answered by the agent's toolbox, then asked again.

    With `cache` (a jsonl file), answers are kept under a key of the weights' bytes, the
    generation settings and the row's opening turns, so a re-run only generates what changed
    (e.g. a new GRPO adapter against an unchanged base and SFT)."""
    settings = {"max_new_tokens": max_new_tokens, "tool_rounds": tool_rounds}
    system = _fingerprint(model_path, adapter, settings)
    keys = [_row_key(system, r) for r in rows]
    known = _read_cache(cache)
    todo = [k for k, key in enumerate(keys) if key not in known]
    if todo:
        new = _generate_answers([rows[k] for k in todo], model_path, adapter, max_new_tokens,
                                batch_size, tool_rounds)
        fresh = {keys[k]: text for k, text in zip(todo, new, strict=True)}
        known.update(fresh)
        if cache:
            Path(cache).parent.mkdir(parents=True, exist_ok=True)
            with Path(cache).open("a") as fh:
                for key, text in fresh.items():
                    fh.write(json.dumps({"key": key, "text": text}) + "\n")
    return [known[key] for key in keys]


def _fingerprint(model_path: str, adapter: str | None, settings: dict) -> str:
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for folder in [Path(model_path), *([Path(adapter)] if adapter else [])]:
        for f in sorted(folder.glob("*.safetensors")):
            st = f.stat()
            h.update(_digest(str(f), st.st_mtime_ns, st.st_size))
    return h.hexdigest()


@functools.cache
def _digest(path: str, mtime_ns: int, size: int) -> bytes:
    """A weights file's hash, read once per version of the file (every system shares the base)."""
    return hashlib.sha256(Path(path).read_bytes()).digest()


def _row_key(system: str, row: dict) -> str:
    turns = json.dumps(list(row["messages"][:2]), sort_keys=True)
    return hashlib.sha256((system + turns + row["analysis"]).encode()).hexdigest()


def _read_cache(cache: str | Path | None) -> dict[str, str]:
    if not cache or not Path(cache).is_file():
        return {}
    out = {}
    for line in Path(cache).read_text().splitlines():
        try:
            item = json.loads(line)
            out[item["key"]] = item["text"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut short by an interrupted run: generate that row again
    return out


def _generate_answers(rows, model_path, adapter, max_new_tokens, batch_size, tool_rounds):
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
    syn, confusers = synthetic_rows(cfg["data"], cfg.get("max_rows"), cfg.get("confuser_rows"))
    sets["synthetic held-out"] = syn
    sets["hard confusers"] = confusers
    if cfg.get("real_media", True):
        sets["real media"] = real_rows(cfg.get("cache_dir", "out/cache"))
    model_path = resolve_model(cfg.get("model"))
    systems = {"base": None, "engine": None, **{k: cfg.get(k) for k in ("sft", "grpo") if cfg.get(k)}}
    gen = cfg.get("generation", {})
    seen = {id(r) for r in syn}
    all_rows = syn + [r for r in confusers if id(r) not in seen] + sets.get("real media", [])
    cache = out / "answers_cache.jsonl" if cfg.get("cache_answers", True) else None
    ids = {id(r): k for k, r in enumerate(all_rows)}
    table: dict = {"sets": {k: len(v) for k, v in sets.items()}, "systems": {}, "timing_s": {}}
    answers: dict[str, list[str]] = {}
    for name, adapter in systems.items():
        t0 = time.time()
        if name == "engine":
            answers[name] = engine_answers(all_rows)
        else:
            answers[name] = model_answers(all_rows, model_path, adapter, cache=cache, **gen)
        table["timing_s"][name] = round(time.time() - t0, 1)
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
