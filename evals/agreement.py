"""How far a judge agrees with hand-written relation labels.

The label files (tests/data/evals_relations_*.json) hold captions and
event/caption pairs labelled entailment / neutral / contradiction by a person.
`agreement` runs a judge on every pair and reports accuracy, Cohen's kappa,
per-class scores and the confusion matrix; `calibrate` picks the offline
judge's thresholds on the development files (never on the test or held-out file).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from evals.judges import LABELS, Judge
from evals.metrics import normalise_caption
from evals.offline_judge import OfflineJudge
from tools.errors import FaceReasonError


def load_labels(path: str | Path) -> list[dict]:
    """Pairs `{caption, event, label}` with the caption text filled in."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        caps = data["captions"]
        pairs = [{"caption": caps[p["caption"]], "caption_id": p["caption"], "event": p["event"],
                  "label": p["label"]} for p in data["pairs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FaceReasonError(f"{path} is not a relation-label file ({exc}).") from None
    bad = [p["label"] for p in pairs if p["label"] not in LABELS]
    if bad:
        raise FaceReasonError(f"{path}: unknown labels {sorted(set(bad))}; use {', '.join(LABELS)}.")
    return pairs


def judge_pairs(judge: Judge, pairs: list[dict]) -> list[str]:
    """The judge's label for every pair, one classify call per caption (as AutoDQ calls it)."""
    out: dict[int, str] = {}
    by_caption: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_caption.setdefault(p["caption"], []).append(i)
    for caption, idx in by_caption.items():
        events = [normalise_caption(pairs[i]["event"]) for i in idx]
        for i, rel in zip(idx, judge.classify(events, normalise_caption(caption)), strict=True):
            out[i] = rel.label
    return [out[i] for i in range(len(pairs))]


def agreement(judge: Judge, path: str | Path) -> dict:
    """Accuracy, Cohen's kappa, per-class precision/recall/F1 and confusion against hand labels."""
    from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score
    from sklearn.metrics import precision_recall_fscore_support as prfs

    pairs = load_labels(path)
    gold = [p["label"] for p in pairs]
    pred = judge_pairs(judge, pairs)
    labels = list(LABELS)
    p, r, f, s = prfs(gold, pred, labels=labels, zero_division=0)
    # "entailed or not" is the decision AutoDQ's score actually depends on
    binary = [g == "entailment" for g in gold], [q == "entailment" for q in pred]
    return {
        "n": len(pairs),
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
        "kappa": float(cohen_kappa_score(gold, pred, labels=labels)),
        "entailment_accuracy": float(accuracy_score(*binary)),
        "per_class": {lab: {"precision": float(p[k]), "recall": float(r[k]), "f1": float(f[k]),
                            "support": int(s[k])} for k, lab in enumerate(labels)},
        "labels": labels,
        "confusion": confusion_matrix(gold, pred, labels=labels).tolist(),  # rows: gold, cols: judge
        "disagreements": [{"caption_id": q["caption_id"], "event": q["event"], "gold": g, "judge": j}
                          for q, g, j in zip(pairs, gold, pred, strict=True) if g != j],
    }


def calibrate(
    dev_paths: str | Path | list[str | Path],
    entail_grid: tuple[float, ...] = (0.45, 0.5, 0.55, 0.6),
    topic_grid: tuple[float, ...] = (0.2, 0.25, 0.3, 0.35),
    lexicon_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3),
    judge: OfflineJudge | None = None,
) -> dict:
    """Grid-search the offline judge's thresholds for accuracy over the development labels."""
    judge = judge or OfflineJudge()
    paths = [dev_paths] if isinstance(dev_paths, str | Path) else list(dev_paths)
    best: dict = {"accuracy": -1.0}
    for e, t, lex in itertools.product(entail_grid, topic_grid, lexicon_grid):
        if t > e:
            continue
        judge.entail_threshold, judge.topic_threshold, judge.lexicon_threshold = e, t, lex
        runs = [agreement(judge, p) for p in paths]
        acc = sum(r["accuracy"] * r["n"] for r in runs) / sum(r["n"] for r in runs)
        if acc > best["accuracy"]:
            best = {"accuracy": acc, "entail_threshold": e, "topic_threshold": t, "lexicon_threshold": lex}
    return best
