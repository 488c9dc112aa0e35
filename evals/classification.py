"""Emotion, Action Unit and explanation metrics as pure functions on plain data.

- Emotion: accuracy, UAR (unweighted average recall: the mean of per-class
  recalls), WAR (weighted average recall: recall weighted by class support,
  which equals accuracy; DFEW and FERV39k report both), macro-F1 and the
  confusion matrix, computed with scikit-learn; `plot_confusion` saves a PNG.
- AUs: per-AU F1 of occurrence; for intensities, per-AU Pearson r and
  Spearman rho (scipy) and ICC(3,1) (Shrout & Fleiss 1979), the agreement
  statistic DISFA and BP4D intensity results are reported with. Spearman
  suits coarse ordinal labels (FACS letters A-E).
- Explanations (records as produced by the agent, see agent/schema.py): format
  validity, faithfulness (the cited AUs were observed) and fallback rate.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tools.errors import FaceReasonError
from tools.facs import EMOTIONS

# Common spellings of the emotion labels in public data sets -> tools.facs.EMOTIONS names.
LABEL_ALIASES: dict[str, str] = {
    "angry": "anger", "anger": "anger", "an": "anger",
    "disgusted": "disgust", "disgust": "disgust", "di": "disgust",
    "fearful": "fear", "fear": "fear", "afraid": "fear", "scared": "fear", "fe": "fear",
    "happy": "happiness", "happiness": "happiness", "joy": "happiness", "ha": "happiness",
    "sad": "sadness", "sadness": "sadness", "sa": "sadness",
    "surprised": "surprise", "surprise": "surprise", "su": "surprise",
    "neutral": "neutral", "calm": "neutral", "ne": "neutral",
    "contempt": "contempt", "contemptuous": "contempt",
}


def normalise_label(label: object) -> str:
    """The project's name for an emotion label; unknown labels pass through, lower-cased."""
    s = str(label).strip().lower()
    return LABEL_ALIASES.get(s, s)


def emotion_metrics(
    y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str] | None = None
) -> dict:
    """Accuracy, UAR, WAR, macro-F1, per-class scores and the confusion matrix.

    `labels` fixes the class order (default: the project's emotion order for
    the classes present, then any others alphabetically). Labels are
    normalised with `normalise_label` first.
    """
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
    from sklearn.metrics import precision_recall_fscore_support as prfs

    if len(y_true) != len(y_pred):
        raise FaceReasonError(f"{len(y_true)} labels but {len(y_pred)} predictions: they must pair up.")
    if not y_true:
        raise FaceReasonError("No labelled items to score.")
    t = [normalise_label(x) for x in y_true]
    p = [normalise_label(x) for x in y_pred]
    if labels is None:
        present = set(t) | set(p)
        labels = [e for e in EMOTIONS if e in present] + sorted(present - set(EMOTIONS))
    else:
        labels = [normalise_label(x) for x in labels]
    # UAR averages recall over the classes that occur in the ground truth
    true_labels = [lab for lab in labels if lab in set(t)]
    prec, rec, f1s, sup = prfs(t, p, labels=labels, zero_division=0)
    return {
        "n": len(t),
        "accuracy": float(accuracy_score(t, p)),
        "uar": float(balanced_accuracy_score(t, p)),
        "war": float(np.average([rec[labels.index(lab)] for lab in true_labels],
                                weights=[sup[labels.index(lab)] for lab in true_labels])),
        "macro_f1": float(f1_score(t, p, labels=true_labels, average="macro", zero_division=0)),
        "labels": list(labels),
        "per_class": {lab: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1s[k]),
                            "support": int(sup[k])} for k, lab in enumerate(labels)},
        "confusion": confusion_matrix(t, p, labels=labels).tolist(),  # rows: truth, cols: prediction
    }


def plot_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path,
                   title: str = "Emotion confusion matrix") -> Path:
    """Save a row-normalised confusion matrix (with counts) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(confusion, dtype=float)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.8 + 0.8 * len(labels)))
    ConfusionMatrixDisplay(norm, display_labels=list(labels)).plot(
        ax=ax, cmap="Blues", values_format=".2f", colorbar=False, xticks_rotation=45)
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- AUs


def icc_3_1(ratings: np.ndarray) -> float:
    """ICC(3,1): two-way mixed, consistency, single rater (Shrout & Fleiss 1979, case 3).

    `ratings` is (n targets, k raters). ICC(3,1) = (BMS - EMS) / (BMS + (k-1) EMS),
    with BMS the between-targets mean square and EMS the residual mean square.
    No pinned library offers it (pingouin would add statsmodels and more).
    """
    x = np.asarray(ratings, dtype=float)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise FaceReasonError("ICC needs at least 2 targets rated by at least 2 raters.")
    n, k = x.shape
    grand = x.mean()
    ss_rows = k * ((x.mean(1) - grand) ** 2).sum()
    ss_cols = n * ((x.mean(0) - grand) ** 2).sum()
    ss_err = ((x - grand) ** 2).sum() - ss_rows - ss_cols
    bms = ss_rows / (n - 1)
    ems = ss_err / ((n - 1) * (k - 1))
    denom = bms + (k - 1) * ems
    return float((bms - ems) / denom) if denom > 0 else float("nan")


def au_metrics(
    true_occ: Mapping[str, Sequence[float]],
    pred_occ: Mapping[str, Sequence[float]],
    true_int: Mapping[str, Sequence[float]] | None = None,
    pred_int: Mapping[str, Sequence[float]] | None = None,
) -> dict:
    """Per-AU occurrence F1 (and mean), and where intensities exist, Pearson r, Spearman rho and ICC(3,1).

    Each mapping is AU code -> one value per item (occurrence 0/1, intensity 0-5);
    only AUs present in both the labels and the predictions are scored.
    """
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import f1_score

    per_au: dict[str, dict] = {}
    for au in sorted(set(true_occ) & set(pred_occ)):
        t = np.asarray(true_occ[au], float) >= 0.5
        p = np.asarray(pred_occ[au], float) >= 0.5
        if len(t) != len(p):
            raise FaceReasonError(f"{au}: {len(t)} labels but {len(p)} predictions.")
        per_au[au] = {"f1": float(f1_score(t, p, zero_division=0)), "support": int(t.sum())}
    for au in sorted(set(true_int or {}) & set(pred_int or {})):
        t = np.asarray(true_int[au], float)
        p = np.asarray(pred_int[au], float)
        if len(t) != len(p):
            raise FaceReasonError(f"{au}: {len(t)} intensity labels but {len(p)} predictions.")
        row = per_au.setdefault(au, {})
        ok = len(t) >= 2 and t.std() > 0 and p.std() > 0
        row["pearson"] = float(pearsonr(t, p)[0]) if ok else float("nan")
        row["spearman"] = float(spearmanr(t, p)[0]) if ok else float("nan")
        row["icc31"] = icc_3_1(np.stack([t, p], 1)) if len(t) >= 2 else float("nan")
        row["mae"] = float(np.abs(t - p).mean())

    def mean(key: str) -> float | None:
        vals = [r[key] for r in per_au.values() if key in r and not np.isnan(r[key])]
        return float(np.mean(vals)) if vals else None

    return {"per_au": per_au, "mean_f1": mean("f1"), "mean_pearson": mean("pearson"),
            "mean_spearman": mean("spearman"), "mean_icc31": mean("icc31"), "mean_mae": mean("mae")}


# --------------------------------------------------------------------------- explanations


def _observed_from_analysis(analysis: Mapping) -> set[str]:
    """AU codes with at least one event (onset/apex/offset) in an Analysis JSON dict."""
    return {str(e.get("au")) for t in analysis.get("tracks", []) for e in t.get("events", [])}


def explanation_metrics(records: Iterable[Mapping], observed: Sequence[Iterable[str]] | None = None) -> dict:
    """Format validity, faithfulness and fallback rate over explanation records.

    A record is an Explanation JSON dict (agent/schema.py) or `{"text": ...}`
    holding a model's raw answer in the ExpLLM layout. The AUs observed for a
    record come from `observed[i]`, else its "observed_aus" list, else its
    "analysis" (Analysis JSON: AUs with events); without any of them the
    record's own `unfaithful_claims` (the agent's check) decides.
    faithfulness = cited AUs that were observed / cited AUs (1.0 when none is cited).
    fully_faithful_share = records with no violation of the agent's faithfulness
    check (agent.faithfulness.check, run on the record's "analysis" when it has one).
    """
    from pydantic import ValidationError

    from agent.faithfulness import check
    from agent.schema import Explanation, ParseError, parse_explanation
    from tools.analysis import Analysis

    recs = list(records)
    rows = []
    for i, rec in enumerate(recs):
        exp = None
        problem = ""
        try:
            if "text" in rec and "conclusion" not in rec:
                exp = parse_explanation(str(rec["text"]))
            else:
                exp = Explanation.model_validate({k: v for k, v in rec.items()
                                                  if k not in ("observed_aus", "analysis", "id")})
        except (ParseError, ValidationError, TypeError) as exc:
            problem = str(exc).splitlines()[0]
        row = {"index": i, "id": rec.get("id", i), "valid": exp is not None, "problem": problem}
        if exp is not None:
            cited = {o.au for o in exp.key_observations}
            obs = None
            if observed is not None:
                obs = set(observed[i])
            elif "observed_aus" in rec:
                obs = set(rec["observed_aus"])
            elif isinstance(rec.get("analysis"), Mapping):
                obs = _observed_from_analysis(rec["analysis"])
            if obs is not None:
                unfaithful = sorted(cited - obs)
            else:
                unfaithful = sorted({c for c in cited if any(c in u for u in exp.unfaithful_claims)})
            claims = list(exp.unfaithful_claims)
            if rec.get("analysis") is not None:
                raw = rec["analysis"]
                a = Analysis.model_validate_json(raw) if isinstance(raw, str) else Analysis.model_validate(raw)
                claims = check(exp, a)
            row.update(cited=sorted(cited), unfaithful=unfaithful, claims=claims,
                       faithfulness=1.0 if not cited else 1 - len(unfaithful) / len(cited),
                       fallback=bool(exp.fallback_used))
        rows.append(row)
    valid = [r for r in rows if r["valid"]]
    return {
        "n": len(rows),
        "format_validity": len(valid) / len(rows) if rows else 0.0,
        "faithfulness": float(np.mean([r["faithfulness"] for r in valid])) if valid else None,
        "fully_faithful_share": float(np.mean([not r["unfaithful"] and not r["claims"] for r in valid]))
        if valid else None,
        "fallback_rate": float(np.mean([r["fallback"] for r in valid])) if valid else None,
        "items": rows,
    }
