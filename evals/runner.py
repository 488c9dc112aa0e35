"""Runners for labelled sets: emotion, AU and explanation evaluations.

Readers here are deliberately minimal: a CSV (with a header, or headerless
`path,label[,pred]`), a jsonl, or a json list, with one item per row. Column
names follow common usage: `id` or `path`; `label` (or `emotion`,
`expression`); `pred` (or `prediction`, `predicted`); AU occurrence `AU12_c`
and intensity `AU12_r` (OpenFace-style), predictions `pred_AU12_c`,
`pred_AU12_r`; jsonl may instead nest them as `{"aus": {...}, "pred_aus":
{...}, "au_intensity": {...}, "pred_au_intensity": {...}}`. Adapters for
public formats (FEA-20K, ExpLLM) live in finetune/data and can hand their rows
to the same metric functions.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from evals.classification import au_metrics, emotion_metrics, explanation_metrics, plot_confusion
from evals.fec import _read_json_or_jsonl
from tools.errors import FaceReasonError

_LABEL_KEYS = ("label", "emotion", "expression", "gt", "target")
_PRED_KEYS = ("pred", "prediction", "predicted", "pred_label")
_ID_KEYS = ("id", "path", "file", "video", "image")


def load_rows(path: str | Path) -> list[dict]:
    """Rows of a CSV / jsonl / json-list file as dicts."""
    path = Path(path)
    if not path.is_file():
        raise FaceReasonError(f"{path} does not exist or is not a file.")
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        text = path.read_text(encoding="utf-8")
        dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
        rows = list(csv.reader(text.splitlines(), dialect=dialect))
        rows = [r for r in rows if r and any(c.strip() for c in r)]
        if not rows:
            return []
        head = [c.strip() for c in rows[0]]
        known = set(_LABEL_KEYS + _PRED_KEYS + _ID_KEYS)
        if any(h.lower() in known or re.match(r"^(pred_)?AU\d+_[rc]$", h) for h in head):
            return [dict(zip(head, (c.strip() for c in r), strict=False)) for r in rows[1:]]
        names = ["path", "label", "pred"]
        return [dict(zip(names, (c.strip() for c in r), strict=False)) for r in rows]
    rows = _read_json_or_jsonl(path)
    if not all(isinstance(r, dict) for r in rows):
        raise FaceReasonError(f"{path}: every item must be a JSON object.")
    return rows


def _first(row: dict, keys: tuple[str, ...]) -> str | None:
    for k in keys:
        if row.get(k) not in (None, ""):
            return str(row[k])
    return None


def _predict_emotions(paths: list[str], root: Path) -> list[str]:
    """Our perception's dominant emotion for each file (used when no predictions are given)."""
    from tqdm import tqdm

    from tools import analyze

    out = []
    for p in tqdm(paths, desc="analyze", unit="file"):
        f = Path(p) if Path(p).is_absolute() else root / p
        a = analyze(f)
        tracks = [t for t in a.tracks if t.summary is not None]
        if not tracks:
            out.append("no_face")
            continue
        longest = max(tracks, key=lambda t: t.n)
        out.append(longest.summary.dominant_emotion)
    return out


def run_emotion(data: str | Path, pred: str | Path | None = None, out_dir: str | Path | None = None,
                labels: list[str] | None = None) -> dict:
    """Emotion metrics for a labelled set; predictions from the file, --pred, or our perception."""
    rows = load_rows(data)
    if not rows:
        raise FaceReasonError(f"{data} holds no labelled items.")
    truth = [_first(r, _LABEL_KEYS) for r in rows]
    if any(t is None for t in truth):
        k = truth.index(None)
        raise FaceReasonError(f"{data}: item {k} has no label (columns: {', '.join(_LABEL_KEYS)}).")
    ids = [_first(r, _ID_KEYS) or str(k) for k, r in enumerate(rows)]
    if pred is not None:
        by_id = {_first(r, _ID_KEYS): _first(r, _PRED_KEYS + _LABEL_KEYS) for r in load_rows(pred)}
        lost = [i for i in ids if i not in by_id]
        if lost:
            raise FaceReasonError(f"{pred} has no prediction for {len(lost)} items, e.g. {lost[0]!r}.")
        preds = [by_id[i] for i in ids]
    else:
        preds = [_first(r, _PRED_KEYS) for r in rows]
        if any(p is None for p in preds):
            if not all(p is None for p in preds):
                raise FaceReasonError(f"{data}: some items have a prediction and some do not.")
            preds = _predict_emotions(ids, Path(data).parent)
    result = emotion_metrics(truth, preds, labels)
    result["items"] = [{"id": i, "label": t, "pred": p} for i, t, p in zip(ids, truth, preds, strict=True)]
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        plot_confusion(result["confusion"], result["labels"], out / "confusion.png")
        lines = ["# Emotion evaluation", "", f"Items: {result['n']}", "",
                 "| accuracy | UAR | WAR | macro-F1 |", "|---|---|---|---|",
                 f"| {result['accuracy']:.3f} | {result['uar']:.3f} | {result['war']:.3f} "
                 f"| {result['macro_f1']:.3f} |", "",
                 "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['f1']:.3f} | {v['support']} |"
                  for c, v in result["per_class"].items()]
        lines += ["", "![confusion matrix](confusion.png)", ""]
        (out / "report.md").write_text("\n".join(lines), encoding="utf-8")
    return result


def _au_columns(rows: list[dict]) -> tuple[dict, dict, dict, dict]:
    t_occ: dict[str, list] = {}
    p_occ: dict[str, list] = {}
    t_int: dict[str, list] = {}
    p_int: dict[str, list] = {}
    for k, r in enumerate(rows):
        flat = dict(r)
        for src, fmt in (("aus", "{}_c"), ("pred_aus", "pred_{}_c"),
                         ("au_intensity", "{}_r"), ("pred_au_intensity", "pred_{}_r")):
            if isinstance(r.get(src), dict):
                flat.update({fmt.format(au): v for au, v in r[src].items()})
        for key, val in flat.items():
            m = re.match(r"^(pred_)?(AU\d+)_([rc])$", str(key))
            if not m or val in (None, ""):
                continue
            try:
                v = float(val)
            except (TypeError, ValueError):
                raise FaceReasonError(f"item {k}: {key}={val!r} is not a number.") from None
            table = {(False, "c"): t_occ, (True, "c"): p_occ, (False, "r"): t_int,
                     (True, "r"): p_int}[(bool(m.group(1)), m.group(3))]
            table.setdefault(m.group(2), []).append(v)
    return t_occ, p_occ, t_int, p_int


def run_au(data: str | Path, out_dir: str | Path | None = None) -> dict:
    """AU metrics for a file holding labels and predictions per item."""
    rows = load_rows(data)
    if not rows:
        raise FaceReasonError(f"{data} holds no labelled items.")
    t_occ, p_occ, t_int, p_int = _au_columns(rows)
    for name, table in (("label", t_occ), ("prediction", p_occ), ("label", t_int), ("prediction", p_int)):
        for au, vals in table.items():
            if len(vals) != len(rows):
                raise FaceReasonError(f"{data}: {au} {name}s are missing for some items.")
    if not (set(t_occ) & set(p_occ)) and not (set(t_int) & set(p_int)):
        raise FaceReasonError(
            f"{data}: found no AU both labelled and predicted; use columns like AU12_c and pred_AU12_c "
            "(occurrence) or AU12_r and pred_AU12_r (intensity).")
    # occurrence can be derived from intensity where only intensities are given (FACS: >= 1 is present)
    for src, dst in ((t_int, t_occ), (p_int, p_occ)):
        for au, vals in src.items():
            dst.setdefault(au, [float(v >= 1.0) for v in vals])
    result = au_metrics(t_occ, p_occ, t_int or None, p_int or None)
    result["n"] = len(rows)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
        fmt = lambda v: "" if v is None or v != v else f"{v:.3f}"  # noqa: E731  (NaN -> blank)
        lines = ["# AU evaluation", "", f"Items: {len(rows)}; mean F1 {fmt(result['mean_f1'])}, "
                 f"mean Pearson {fmt(result['mean_pearson'])}, mean ICC(3,1) {fmt(result['mean_icc31'])}",
                 "", "| AU | F1 | support | Pearson | ICC(3,1) | MAE |", "|---|---|---|---|---|---|"]
        lines += [f"| {au} | {fmt(v.get('f1'))} | {v.get('support', '')} | {fmt(v.get('pearson'))} "
                  f"| {fmt(v.get('icc31'))} | {fmt(v.get('mae'))} |" for au, v in result["per_au"].items()]
        (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return result


def run_explanations(data: str | Path, out_dir: str | Path | None = None) -> dict:
    """Explanation metrics over a jsonl of Explanation records (or {"text": ...} answers)."""
    rows = load_rows(data)
    if not rows:
        raise FaceReasonError(f"{data} holds no explanation records.")
    result = explanation_metrics(rows)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return result
