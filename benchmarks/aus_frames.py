"""AU estimates against hand-coded real frames (tests/data/aus_frames.json).

    python benchmarks/aus_frames.py [--split heldout|tune|all] [--json OUT]

Runs the perception the CLI runs (`tools.analyze`, every frame) on each medium
once, reads the matching face's AU intensity and occurrence (video: the track's
row nearest the coded time; stills: the face whose box holds the coded centre)
and scores them per split:

- per-AU occurrence F1 and intensity Pearson / Spearman (coded letters A-E
  = 1-5, absent = 0) with `evals.classification.au_metrics`, over the frames
  where the AU is visible (`not_visible` AUs are skipped, not counted absent);
- macro F1 over the AUs that occur in the split, and micro F1 over every
  visible (frame, AU) pair;
- false positives at rest: the share of (rest frame, AU) pairs the estimator
  calls present, and for AUs nobody coded in the split, how many frames fire.

The 'heldout' half must never inform an estimator choice; the file says how
the split was fixed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from evals.classification import au_metrics  # noqa: E402
from tools.analysis import Analysis, Track  # noqa: E402
from tools.facs import AU_CODES  # noqa: E402
from tools.video import VIDEO_SUFFIXES  # noqa: E402

CODED = ROOT / "tests" / "data" / "aus_frames.json"
SPLITS = ("tune", "heldout")
MAX_TIME_GAP_S = 0.1  # a coded video frame must have a face row this close in time


@dataclass
class Readings:
    """One row per coded frame, columns = AU_CODES."""

    truth: np.ndarray  # (n, K) coded intensity 0-5 (0 = absent)
    visible: np.ndarray  # (n, K) bool: the coder could judge this AU
    intensity: np.ndarray  # (n, K) estimated intensity 0-5
    occurrence: np.ndarray  # (n, K) estimated 0/1
    found: np.ndarray  # (n,) bool: the pipeline had this face at this frame


def load_coded(path: str | Path = CODED) -> dict:
    """The coded-frames file, checked: raises ValueError naming the first problem."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    scale = doc.get("scale")
    if scale != {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5}:
        raise ValueError(f"{path}: 'scale' must map A..E to 1..5, got {scale!r}")
    if not str(doc.get("_about", "")).strip():
        raise ValueError(f"{path}: '_about' must say who coded the frames and how")
    seen: set[str] = set()
    for f in doc.get("frames", []):
        fid = f.get("id")
        if not fid or fid in seen:
            raise ValueError(f"{path}: frame ids must be present and unique ({fid!r})")
        seen.add(fid)
        if f.get("split") not in SPLITS:
            raise ValueError(f"{path}: {fid}: split must be one of {SPLITS}")
        if not f.get("media") or not f.get("expression"):
            raise ValueError(f"{path}: {fid}: 'media' and 'expression' are required")
        is_video = Path(f["media"]).suffix.lower() in VIDEO_SUFFIXES
        if is_video != ("time" in f):
            raise ValueError(f"{path}: {fid}: video frames need 'time', stills must not have one")
        bad = [a for a in [*f.get("aus", {}), *f.get("not_visible", [])] if a not in AU_CODES]
        if bad:
            raise ValueError(f"{path}: {fid}: unknown AU codes {bad}")
        letters = [v for v in f.get("aus", {}).values() if v not in scale]
        if letters:
            raise ValueError(f"{path}: {fid}: intensities must be letters A-E, got {letters}")
        both = set(f.get("aus", {})) & set(f.get("not_visible", []))
        if both:
            raise ValueError(f"{path}: {fid}: {sorted(both)} both coded and marked not visible")
    if not seen:
        raise ValueError(f"{path}: no frames")
    return doc


def coded_face(analysis: Analysis, frame: dict) -> tuple[Track, int] | None:
    """The track and row of the coded face (video: the row nearest the coded time;
    stills: the face whose box holds the coded centre), or None if no face matches."""
    best = None
    for tr in analysis.tracks:
        if tr.aus is None or not len(tr.timestamps):
            continue
        if "time" in frame:
            i = int(np.abs(tr.timestamps - frame["time"]).argmin())
            gap = abs(float(tr.timestamps[i]) - frame["time"])
            if gap > MAX_TIME_GAP_S:
                continue
        else:
            i = 0
            x0, y0, x1, y1 = tr.bbox[0]
            cx, cy = frame.get("face_center", ((x0 + x1) / 2, (y0 + y1) / 2))
            if not (x0 <= cx <= x1 and y0 <= cy <= y1):
                continue
            gap = float(np.hypot(cx - (x0 + x1) / 2, cy - (y0 + y1) / 2))
        if best is None or gap < best[0]:
            best = (gap, tr, i)
    if best is None:
        return None
    _, tr, i = best
    return tr, i


def _row(analysis: Analysis, frame: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """(intensity, occurrence) of the coded face in this frame, or None if no face matches."""
    hit = coded_face(analysis, frame)
    if hit is None:
        return None
    tr, i = hit
    return np.asarray(tr.aus[i], float), np.asarray(tr.au_occurrence[i], float)


def read(frames: Iterable[dict], get_analysis: Callable[[str], Analysis]) -> Readings:
    """The pipeline's AU readings for each coded frame; `get_analysis(media name)` -> Analysis."""
    frames = list(frames)
    k = len(AU_CODES)
    truth, visible = np.zeros((len(frames), k)), np.ones((len(frames), k), bool)
    inten, occ, found = np.zeros((len(frames), k)), np.zeros((len(frames), k)), np.zeros(len(frames), bool)
    scale = {"A": 1, "B": 2, "C": 3, "D": 4, "E": 5}
    for n, f in enumerate(frames):
        for au, letter in f.get("aus", {}).items():
            truth[n, AU_CODES.index(au)] = scale[letter]
        for au in f.get("not_visible", []):
            visible[n, AU_CODES.index(au)] = False
        row = _row(get_analysis(f["media"]), f)
        if row is not None:  # a missed face reads as "nothing measured": all absent
            inten[n], occ[n] = row
            found[n] = True
    return Readings(truth, visible, inten, occ, found)


def score(frames: list[dict], r: Readings) -> dict:
    """Metrics over these frames (one split, or all)."""
    from sklearn.metrics import f1_score

    per = {}
    t_occ, p_occ, t_int, p_int = {}, {}, {}, {}
    for k, au in enumerate(AU_CODES):
        v = r.visible[:, k]
        t_occ[au], p_occ[au] = (r.truth[v, k] > 0).astype(float), r.occurrence[v, k]
        t_int[au], p_int[au] = r.truth[v, k], r.intensity[v, k]
    m = au_metrics(t_occ, p_occ, t_int, p_int)
    for au, row in m["per_au"].items():
        per[au] = {**row, "predicted": int(p_occ[au].sum()), "n": len(t_occ[au])}
    coded = [au for au in AU_CODES if per[au]["support"] > 0]
    nan_mean = lambda key: float(np.nanmean([per[a][key] for a in coded])) if coded else float("nan")  # noqa: E731
    rest = np.array([f["expression"] == "rest" for f in frames])
    rest_pairs = r.occurrence[rest][r.visible[rest]]
    return {
        "frames": len(frames),
        "faces_found": int(r.found.sum()),
        "macro_f1": nan_mean("f1"),
        "micro_f1": float(f1_score((r.truth > 0)[r.visible], r.occurrence[r.visible] >= 0.5, zero_division=0)),
        "mean_pearson": nan_mean("pearson"),
        "mean_spearman": nan_mean("spearman"),
        "rest_frames": int(rest.sum()),
        "rest_fp_rate": float(rest_pairs.mean()) if rest_pairs.size else float("nan"),
        "rest_fp_aus": sorted({AU_CODES[k] for k in np.nonzero(r.occurrence[rest].any(0))[0]}),
        "per_au": per,
    }


def evaluate(get_analysis: Callable[[str], Analysis], path: str | Path = CODED,
             media: Iterable[str] | None = None) -> dict:
    """{"tune": score, "heldout": score, "all": score}; `media` limits the frames to those files."""
    frames = load_coded(path)["frames"]
    if media is not None:
        keep = set(media)
        frames = [f for f in frames if f["media"] in keep]
    r = read(frames, get_analysis)
    out = {}
    for name in (*SPLITS, "all"):
        idx = np.array([name == "all" or f["split"] == name for f in frames])
        if idx.any():
            sub = Readings(r.truth[idx], r.visible[idx], r.intensity[idx], r.occurrence[idx], r.found[idx])
            out[name] = score([f for f, i in zip(frames, idx, strict=True) if i], sub)
    return out


def table(res: dict) -> str:
    """A markdown table of one split's per-AU numbers and its summary line."""
    fmt = lambda v: "-" if v is None or v != v else f"{v:.2f}"  # noqa: E731  (NaN -> "-")
    lines = [f"frames {res['frames']} (faces found {res['faces_found']}); macro F1 {fmt(res['macro_f1'])} "
             f"(AUs coded present), micro F1 {fmt(res['micro_f1'])}, mean Pearson {fmt(res['mean_pearson'])}, "
             f"mean Spearman {fmt(res['mean_spearman'])}; at rest ({res['rest_frames']} frames): "
             f"FP rate {fmt(res['rest_fp_rate'])}, firing {', '.join(res['rest_fp_aus']) or 'none'}",
             "", "| AU | coded present / scored | estimator present | F1 | Pearson | Spearman |",
             "|---|---|---|---|---|---|"]
    for au, v in res["per_au"].items():
        f1 = fmt(v["f1"]) if v["support"] else "-"
        lines.append(f"| {au} | {v['support']} / {v['n']} | {v['predicted']} | {f1} | {fmt(v.get('pearson'))} "
                     f"| {fmt(v.get('spearman'))} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from tools import analyze, assets

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=[*SPLITS, "all"], default=None, help="print one split (default: all three)")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)
    cache: dict[str, Analysis] = {}

    def get(name: str) -> Analysis:
        if name not in cache:
            cache[name] = analyze(assets.media(name), progress=None)
        return cache[name]

    res = evaluate(get)
    for name in ([args.split] if args.split else [*SPLITS, "all"]):
        print(f"## {name}\n\n{table(res[name])}\n")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
