"""Follow-up questions on the real test media: the chat's evaluation on real faces.

The held-out follow-up set (finetune/evaluate.py) asks synthetic faces questions
whose targets the data builder wrote; it measures how well the model learned that
format. This set asks the real clips what a user asks ("When does she start
laughing?") and checks the answer against what a person sees in the frames
(finetune/data/real_questions.yaml, times from tests/data/aus_labels.json):

- time: the first time the rendered answer is about falls in the expected window
  (`time`), or, for a question about when something stops, the end of the first
  stretch it cites does (`end`);
- label: the emotion the answer names is the expected one (where one is expected);
- correct: both.

Every system answers through the shipped chat path (agent.graph.answer_task, the
model's tool rounds and constrained record, agent/render.py's answer), starting
from the engine's decision for the face, so the systems differ only in who answers.
The rules (agent.answers.fallback_answer) are the baseline a model must reach before
the chat uses it (`chat_check`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

REAL_QUESTIONS = Path(__file__).resolve().parent / "data" / "real_questions.yaml"
REAL_ANSWER_SET = "real follow-ups"
METRICS = ("time", "label", "correct")


def questions(real_rows: list[dict]) -> list[dict]:
    """One item per question on a clip among `real_rows` (finetune.evaluate.real_rows)."""
    spec = yaml.safe_load(REAL_QUESTIONS.read_text())
    by_id = {r["id"]: r for r in real_rows}
    return [{"id": name, "row": by_id[name], **q} for name, qs in spec.items() if name in by_id
            for q in qs]


def tasks(items: list[dict]) -> list:
    """The agent's answer tasks for the items, each from the engine's decision for its face."""
    from agent import engine
    from agent.graph import answer_task
    from tools.analysis import Analysis

    out = []
    for it in items:
        a = Analysis.from_json(it["row"]["analysis"])
        tid = it["row"]["track_id"]
        out.append(answer_task(a, tid, it["q"], engine.decide(a, a.track(tid))))
    return out


def outcomes(tasks_: list) -> list[dict]:
    """What each finished task answered: text, times, the spans it cites, label, and whether
    the rules answered (a task never run through a model is answered by the rules: the
    baseline)."""
    from agent.answers import answer_of
    from agent.render import ref_spans

    out = []
    for t in tasks_:
        got = answer_of(t, t.question)
        spans = ref_spans(t.facts, got.record.ref, t.toolbox.results)
        out.append({"text": got.text, "times": [round(x, 2) for x in got.times],
                    "spans": [[round(a, 2), round(b, 2)] for a, b in spans], "label": got.record.label,
                    "fallback": got.fallback})
    return out


def model_outcomes(items: list[dict], backend, batch_size: int = 8) -> list[dict]:
    from agent.graph import run_tasks

    ts = tasks(items)
    for i in range(0, len(ts), batch_size):
        run_tasks(ts[i:i + batch_size], backend)
    return outcomes(ts)


def rule_outcomes(items: list[dict]) -> list[dict]:
    return outcomes(tasks(items))


def score(items: list[dict], outs: list[dict]) -> dict:
    if not items:
        return {m: None for m in METRICS} | {"n": 0}
    time_ok, label_ok = [], []
    for it, o in zip(items, outs, strict=True):
        if "end" in it:  # "When does she stop crying?": where the first cited stretch ends
            lo, hi = it["end"]
            time_ok.append(bool(o["spans"]) and lo <= o["spans"][0][1] <= hi)
        else:
            lo, hi = it["time"]
            time_ok.append(bool(o["times"]) and lo <= o["times"][0] <= hi)
        label_ok.append("label" not in it or o["label"] == it["label"])
    correct = [a and b for a, b in zip(time_ok, label_ok, strict=True)]
    return {"n": len(items), "time": float(np.mean(time_ok)), "label": float(np.mean(label_ok)),
            "correct": float(np.mean(correct))}


def chat_check(table: dict, system: str, answer_set: str = "follow-up questions") -> tuple[bool, list[str]]:
    """Whether `system` may answer the chat: at or above the rules on both follow-up sets
    ("all three" on the held-out questions, `answer_set`; "both" on the real ones)."""
    reasons = []
    pairs = [(answer_set, table.get("answers", {}), "correct"),
             (REAL_ANSWER_SET, table.get("real_answers", {}), "correct")]
    for name, by_system, key in pairs:
        m, e = by_system.get(system), by_system.get("engine")
        if not m or not e or m.get(key) is None or e.get(key) is None:
            reasons.append(f"{name}: {system} was not evaluated")
        elif m[key] < e[key] - 1e-9:
            reasons.append(f"{name}: {key} {m[key]:.2f} < rules {e[key]:.2f}")
    return not reasons, reasons


def markdown(table: dict, names: dict[str, str]) -> list[str]:
    """The real follow-up table's lines (empty when the set was not run); `names`: how each
    system is called in the table."""
    by_system = table.get("real_answers") or {}
    if not by_system:
        return []
    n = next(iter(by_system.values())).get("n", 0)
    lines = [f"**{REAL_ANSWER_SET}** ({n} questions on the real clips; the engine row is the "
             "rule-based answer)\n", "| system | time | label | both |", "|---|---|---|---|"]
    for name, m in by_system.items():
        cells = ["–" if m.get(k) is None else f"{m[k]:.2f}" for k in METRICS]
        lines.append(f"| {names.get(name, name)} | " + " | ".join(cells) + " |")
    return [*lines, ""]
