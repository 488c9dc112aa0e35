"""Emotion from a face: appearance CNN + EMFACS evidence from Action Units, fused.

Per frame of a face track:

1. `align_crop` turns the RGB frame and the face's 478 MediaPipe landmarks into a
   64x64 grey crop with the eyes level (what the CNN was trained on).
2. `EmotionCNN.predict` (tools/emotion_cnn.py: fer's mini-Xception, ported to
   PyTorch once and run as ONNX under cv2.dnn) gives 7 FER2013 probabilities per crop.
3. `emfacs_evidence` scores how well the AU intensities match the EMFACS
   prototypes pinned in prompts/emfacs.yaml (Friesen & Ekman 1983).
4. `fuse` pools both into probabilities over tools.facs.EMOTIONS (or a user's
   label set) plus valence/arousal from circumplex positions (Russell 1980).
5. `compound_label` names two strong classes as a compound (Du et al. 2014).

docs/emotion.md explains every number used here.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

import prompts
from tools.emotion_cnn import EmotionCNN, get_cnn
from tools.errors import FaceReasonError
from tools.facs import AU_CODES, EMOTIONS, FER2013_CLASSES

__all__ = [
    "EmotionCNN", "EmotionResult", "LabelSet", "LabelSetError", "Pattern", "align_crop",
    "compound_label", "emfacs_evidence", "fuse", "get_cnn", "label_set_names", "load_label_set",
    "valence_arousal", "DEFAULT",
]

PROMPTS = prompts.ROOT  # the pinned EMFACS table and label sets live with the prompts (design card)
EMFACS_PATH = PROMPTS / "emfacs.yaml"
LABELSET_DIR = PROMPTS / "labelsets"

# The seven non-neutral classes, in tools.facs.EMOTIONS order: emfacs_evidence's columns.
EMFACS_CLASSES: list[str] = [e for e in EMOTIONS if e != "neutral"]


class LabelSetError(FaceReasonError):
    """A label set or the EMFACS table is missing, malformed, or names unknown AUs/classes."""

    code = "bad_label_set"


# ---------------------------------------------------------------------------------------
# 1. Alignment

# MediaPipe FaceMesh eye corners: (33, 133) one eye, (362, 263) the other.
_EYE_A = (33, 133)
_EYE_B = (362, 263)
# Crop geometry: eye midpoint at (0.5, EYE_Y) of the crop, 3-D inter-ocular
# distance = IOD_FRAC of its width. This frames brows to chin like the
# detector-box crops FER2013 was built from; the 3-D distance keeps the scale
# right when the head is turned (a 45-degree yaw shrinks the 2-D distance ~30 %).
_EYE_Y = 0.38
_IOD_FRAC = 0.40


def align_crop(rgb: np.ndarray, landmarks_px: np.ndarray, size: int = 64) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame + (478, 2|3) pixel landmarks -> (size, size) uint8 grey crop.

    A similarity transform from the two eye centres: eyes level, face centred, scale
    from the inter-ocular distance. Only the output pixels are computed (warp first,
    then convert to grey), so the cost does not depend on the frame size.
    """
    rgb = np.asarray(rgb)
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise FaceReasonError(
            f"align_crop needs an (H, W, 3) uint8 RGB image; got {rgb.shape} {rgb.dtype}.")
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise FaceReasonError(
            f"align_crop needs MediaPipe face landmarks shaped (478, 3) in pixels; got {lm.shape}.")
    eye_a = lm[list(_EYE_A)].mean(axis=0)
    eye_b = lm[list(_EYE_B)].mean(axis=0)
    d2 = eye_b[:2] - eye_a[:2]
    iod = float(np.linalg.norm(eye_b - eye_a))
    if not np.isfinite(iod) or iod < 1.0:
        raise FaceReasonError("align_crop: the eye landmarks coincide or are not finite.")
    angle = math.atan2(d2[1], d2[0])
    scale = _IOD_FRAC * size / iod
    # Downscaling a large face with bilinear sampling aliases; warp to a k-times
    # larger canvas and area-average down instead (still only ~k^2 * size^2 pixels).
    k = int(min(4, max(1, math.floor(1.0 / scale))))
    s = scale * k
    c, sn = math.cos(angle) * s, math.sin(angle) * s
    m = np.array([[c, sn, 0.0], [-sn, c, 0.0]])
    mid = (eye_a[:2] + eye_b[:2]) / 2
    m[:, 2] = np.array([0.5 * size * k, _EYE_Y * size * k]) - m[:, :2] @ mid
    img = rgb[..., :3]
    out = cv2.warpAffine(img, m, (size * k, size * k), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)


# ---------------------------------------------------------------------------------------
# 2. Patterns and label sets


@dataclass(frozen=True)
class Pattern:
    """AU evidence for one label: prototypes (AND of AU groups; a group is an OR) and
    inhibitors (AU -> strength in [0, 1]). Score = max_p weight_p * geometric mean of the
    prototype's activations, times prod(1 - strength * activation) over inhibitors."""

    prototypes: tuple[tuple[tuple[tuple[str, ...], ...], float], ...]
    inhibitors: tuple[tuple[str, float], ...] = ()

    def aus(self) -> set[str]:
        names = {a for groups, _ in self.prototypes for g in groups for a in g}
        return names | {a for a, _ in self.inhibitors}


@dataclass
class LabelSet:
    """The labels `fuse` returns probabilities over.

    labels/descriptions: the user's vocabulary. patterns: AU evidence per label (None:
    no AU cue). emotion_weights: per label, weights on the 8 basic classes whose fused
    probabilities count as evidence for it (empty for the default set, which *is* the
    basic classes)."""

    labels: list[str]
    descriptions: list[str]
    patterns: list[Pattern | None]
    emotion_weights: list[dict[str, float]] = field(default_factory=list)
    name: str = "emotions"

    @property
    def is_default(self) -> bool:
        return self.labels == EMOTIONS and not any(self.emotion_weights)


def _parse_pattern(spec: Any, where: str) -> Pattern:
    if not isinstance(spec, dict) or not isinstance(spec.get("prototypes"), list):
        raise LabelSetError(f"{where}: a pattern needs a 'prototypes' list.")
    protos = []
    for i, p in enumerate(spec["prototypes"]):
        if not isinstance(p, dict) or not isinstance(p.get("aus"), list) or not p["aus"]:
            raise LabelSetError(f"{where}: prototype {i + 1} needs a non-empty 'aus' list.")
        groups = []
        for item in p["aus"]:
            group = tuple(str(a).strip().upper() for a in str(item).split("|"))
            for a in group:
                if a not in AU_CODES:
                    raise LabelSetError(
                        f"{where}: unknown AU '{a}'. Known AUs: {', '.join(AU_CODES)}.")
            groups.append(group)
        weight = float(p.get("weight", 1.0))
        if not 0.0 < weight <= 1.0:
            raise LabelSetError(f"{where}: prototype weight must be in (0, 1]; got {weight}.")
        protos.append((tuple(groups), weight))
    inhib = []
    for a, strength in (spec.get("inhibitors") or {}).items():
        a = str(a).upper()
        if a not in AU_CODES:
            raise LabelSetError(f"{where}: unknown inhibitor AU '{a}'.")
        if not 0.0 <= float(strength) <= 1.0:
            raise LabelSetError(f"{where}: inhibitor strength must be in [0, 1]; got {strength}.")
        inhib.append((a, float(strength)))
    return Pattern(tuple(protos), tuple(inhib))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabelSetError(f"Label set file {path} does not exist.") from None
    except yaml.YAMLError as exc:
        raise LabelSetError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise LabelSetError(f"{path} must hold a YAML mapping.")
    return data


@dataclass(frozen=True)
class EmfacsConfig:
    """prompts/emfacs.yaml, parsed: patterns of the 7 non-neutral classes and the
    constants of scoring, fusion, circumplex and compounds."""

    patterns: dict[str, Pattern]
    descriptions: dict[str, str]
    floor: float
    full: float
    cnn_weight: float
    cnn_prior: np.ndarray | None  # FER2013 training-class frequencies, FER2013 order
    pattern_weight: float
    circumplex: dict[str, tuple[float, float]]  # class -> (valence, arousal) at full probability
    compound_names: dict[frozenset[str], str]
    compound_min_prob: float
    compound_min_ratio: float


def _prior(counts: Any, power: float) -> np.ndarray | None:
    if counts is None:
        return None
    c = np.asarray(counts, dtype=np.float64)
    if c.shape != (len(FER2013_CLASSES),) or np.any(c <= 0):
        raise LabelSetError("fusion.cnn_train_counts needs 7 positive counts (FER2013 order).")
    return (c / c.sum()) ** power


@functools.cache
def emfacs_config(path: str | None = None) -> EmfacsConfig:
    p = Path(path) if path else EMFACS_PATH
    data = _read_yaml(p)
    try:
        classes = data["classes"]
        missing = [c for c in EMFACS_CLASSES if c not in classes]
        if missing:
            raise LabelSetError(f"{p}: no EMFACS entry for {', '.join(missing)}.")
        patterns = {c: _parse_pattern(classes[c], f"{p}: {c}") for c in EMFACS_CLASSES}
        desc = {c: str(classes[c].get("description", "")) for c in EMFACS_CLASSES}
        desc["neutral"] = str(data.get("neutral", {}).get("description", "no expression"))
        circ = {}
        for c in EMOTIONS:
            e = data["circumplex"][c]
            a = math.radians(float(e["angle"]))
            circ[c] = (float(e["radius"]) * math.cos(a), float(e["radius"]) * math.sin(a))
        comp = data["compounds"]
        names = {frozenset(n["pair"]): str(n["label"]) for n in comp["names"]}
        return EmfacsConfig(
            patterns=patterns, descriptions=desc,
            floor=float(data["scoring"]["floor"]), full=float(data["scoring"]["full"]),
            cnn_weight=float(data["fusion"]["cnn_weight"]),
            cnn_prior=_prior(data["fusion"].get("cnn_train_counts"),
                             float(data["fusion"].get("cnn_prior_power", 1.0))),
            pattern_weight=float(data["fusion"]["pattern_weight"]),
            circumplex=circ, compound_names=names,
            compound_min_prob=float(comp["min_prob"]), compound_min_ratio=float(comp["min_ratio"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LabelSetError(f"{p} is missing or has a malformed entry: {exc!r}.") from None


def _default_label_set() -> LabelSet:
    cfg = emfacs_config()
    return LabelSet(
        labels=list(EMOTIONS),
        descriptions=[cfg.descriptions[c] for c in EMOTIONS],
        patterns=[cfg.patterns.get(c) for c in EMOTIONS],
        emotion_weights=[{} for _ in EMOTIONS],
        name="emotions",
    )


def label_set_names() -> list[str]:
    """The names `load_label_set` accepts: "emotions" (the default) and prompts/labelsets/*."""
    return ["emotions", *sorted(x.stem for x in LABELSET_DIR.glob("*.yaml"))]


def load_label_set(path_or_name: str | Path | None = None) -> LabelSet:
    """A label set from a YAML path or a name under prompts/labelsets/ ("academic").

    None, "emotions" or "default" give the eight basic classes (tools.facs.EMOTIONS)
    with the EMFACS patterns.
    """
    if path_or_name is None or str(path_or_name) in ("emotions", "default"):
        return _default_label_set()
    p = Path(path_or_name)
    if not p.suffix and not p.exists():
        p = LABELSET_DIR / f"{path_or_name}.yaml"
        if not p.exists():
            raise LabelSetError(
                f"No label set named '{path_or_name}'. Known: {', '.join(label_set_names())}; "
                "or pass a path to a YAML file.")
    data = _read_yaml(p)
    entries = data.get("labels")
    if not isinstance(entries, list) or len(entries) < 2:
        raise LabelSetError(f"{p}: 'labels' must be a list of at least two labels.")
    labels, descs, pats, weights = [], [], [], []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not str(e.get("label", "")).strip():
            raise LabelSetError(f"{p}: label {i + 1} needs a 'label' name.")
        name = str(e["label"]).strip()
        if name in labels:
            raise LabelSetError(f"{p}: label '{name}' appears twice.")
        where = f"{p}: {name}"
        pat = _parse_pattern(e["pattern"], where) if e.get("pattern") is not None else None
        emo = {str(k): float(v) for k, v in (e.get("emotions") or {}).items()}
        bad = [k for k in emo if k not in EMOTIONS]
        if bad:
            raise LabelSetError(
                f"{where}: unknown emotion(s) {', '.join(bad)}; use {', '.join(EMOTIONS)}.")
        if any(v < 0 for v in emo.values()):
            raise LabelSetError(f"{where}: emotion weights must be non-negative.")
        if pat is None and not any(emo.values()):
            raise LabelSetError(
                f"{where}: give a 'pattern' (AU prototypes) or 'emotions' weights, or both; "
                "otherwise nothing can ever support this label.")
        labels.append(name)
        descs.append(str(e.get("description", "")))
        pats.append(pat)
        weights.append(emo)
    return LabelSet(labels, descs, pats, weights, name=str(data.get("name", p.stem)))


DEFAULT: LabelSet = _default_label_set()


# ---------------------------------------------------------------------------------------
# 3. EMFACS evidence


def _check_aus(aus: np.ndarray, au_codes: list[str]) -> np.ndarray:
    a = np.asarray(aus, dtype=np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != len(au_codes):
        raise FaceReasonError(
            f"AU intensities must be shaped (n, {len(au_codes)}) to match au_codes; got {a.shape}.")
    # Missing measurements (occluded frames) count as absent rather than poisoning the row.
    return np.nan_to_num(a, nan=0.0, posinf=5.0, neginf=0.0)


def _activation(a: np.ndarray, cfg: EmfacsConfig) -> np.ndarray:
    return np.clip((a - cfg.floor) / (cfg.full - cfg.floor), 0.0, 1.0)


def _pattern_scores(act: dict[str, np.ndarray], pattern: Pattern, n: int) -> np.ndarray:
    best = np.zeros(n)
    for groups, weight in pattern.prototypes:
        cols = []
        for g in groups:
            present = [act[a] for a in g if a in act]
            if present:  # an AU the estimator does not output is dropped from the prototype
                cols.append(np.max(present, axis=0))
        if not cols:
            continue
        # Geometric mean: a soft AND, zero when any required AU is absent.
        gm = np.exp(np.mean(np.log(np.maximum(np.stack(cols), 1e-9)), axis=0))
        gm[np.min(np.stack(cols), axis=0) <= 0.0] = 0.0
        best = np.maximum(best, weight * gm)
    for a, strength in pattern.inhibitors:
        if a in act:
            best = best * (1.0 - strength * act[a])
    return best


def emfacs_evidence(aus: np.ndarray, au_codes: list[str], table: Any = None) -> np.ndarray:
    """(n, K) AU intensities (0-5) -> (n, C) evidence in [0, 1].

    table None: the EMFACS table, C = 7 columns in EMFACS_CLASSES order (anger, disgust,
    fear, happiness, sadness, surprise, contempt). table a LabelSet: one column per label
    (0 for labels without an AU pattern). table a dict label -> Pattern: its labels in order.
    """
    au_codes = list(au_codes)
    a = _check_aus(aus, au_codes)
    cfg = emfacs_config()
    if table is None:
        pats: list[Pattern | None] = [cfg.patterns[c] for c in EMFACS_CLASSES]
    elif isinstance(table, LabelSet):
        pats = list(table.patterns)
    elif isinstance(table, dict):
        pats = list(table.values())
    else:
        raise LabelSetError(
            "emfacs_evidence: table must be None, a LabelSet or a dict of Patterns.")
    act_all = _activation(a, cfg)
    act = {c: act_all[:, i] for i, c in enumerate(au_codes)}
    out = np.zeros((len(a), len(pats)), np.float32)
    for j, p in enumerate(pats):
        if p is not None:
            out[:, j] = _pattern_scores(act, p, len(a))
    return out


# ---------------------------------------------------------------------------------------
# 4. Fusion, valence/arousal


@dataclass
class EmotionResult:
    probs: np.ndarray  # (n, C) float32, rows sum to 1
    labels: list[str]
    valence: np.ndarray  # (n,) in [-1, 1]
    arousal: np.ndarray  # (n,) in [-1, 1]


def _au_scores(evidence: np.ndarray, activation: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 7) EMFACS evidence + (n, K) AU activations -> (n, 8) scores over EMOTIONS and
    the (n,) share the AUs leave undecided.

    Neutral is the absence of facial activity: 1 - max(best prototype match, second
    strongest AU activation). The second strongest, because one active AU alone is as
    likely estimator noise as expression. When AUs are clearly active but match no
    prototype, the scores sum to less than 1: the AUs abstain on that share and the
    caller gives it to the appearance model (or spreads it uniformly without one).
    """
    n = len(evidence)
    if activation.shape[1] >= 2:
        act2 = np.sort(activation, axis=1)[:, -2]
    else:
        act2 = np.zeros(n)
    scores = np.zeros((n, len(EMOTIONS)))
    for j, c in enumerate(EMFACS_CLASSES):
        scores[:, EMOTIONS.index(c)] = evidence[:, j]
    scores[:, EMOTIONS.index("neutral")] = 1.0 - np.maximum(evidence.max(axis=1, initial=0.0),
                                                            act2)
    total = scores.sum(axis=1, keepdims=True)
    scores = np.where(total > 1.0, scores / np.maximum(total, 1e-9), scores)
    return scores, np.clip(1.0 - scores.sum(axis=1), 0.0, 1.0)


def _cnn_distribution(cnn_probs: np.ndarray, n: int, prior: np.ndarray | None) -> np.ndarray:
    p = np.asarray(cnn_probs, dtype=np.float64)
    if p.ndim != 2 or p.shape != (n, len(FER2013_CLASSES)):
        raise FaceReasonError(
            f"cnn_probs must be shaped ({n}, {len(FER2013_CLASSES)}) (FER2013 order, one row per "
            f"AU row); got {p.shape}.")
    if prior is not None:  # label-shift correction to balanced classes (see emfacs.yaml)
        p = p / prior
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-12)
    out = np.zeros((n, len(EMOTIONS)))
    for j, c in enumerate(FER2013_CLASSES):
        out[:, EMOTIONS.index(c)] = p[:, j]
    # The CNN has no contempt class: it contributes nothing there.
    return out / np.maximum(out.sum(axis=1, keepdims=True), 1e-9)


def valence_arousal(probs8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 8) probabilities over EMOTIONS -> valence, arousal: the probability-weighted
    mean of each class's circumplex coordinates (prompts/emfacs.yaml, after Russell 1980)."""
    cfg = emfacs_config()
    xy = np.array([cfg.circumplex[c] for c in EMOTIONS])  # (8, 2)
    va = np.asarray(probs8, np.float64) @ xy
    va = np.clip(va, -1.0, 1.0).astype(np.float32)
    return va[:, 0], va[:, 1]


def fuse(cnn_probs: np.ndarray | None, aus: np.ndarray, au_codes: list[str],
         label_set: LabelSet | None = None) -> EmotionResult:
    """CNN probabilities (n, 7, FER2013 order; None for AU-only) + AU intensities (n, K)
    -> probabilities over the label set (default: the 8 tools.facs.EMOTIONS).

    Basic classes: linear opinion pool cnn_weight * CNN + (1 - cnn_weight) * AU
    scores, where the share the AUs leave undecided (active AUs matching no prototype)
    follows the CNN (uniform without one). A user label set: each label's score is
    pattern_weight * its AU-pattern evidence + (1 - pattern_weight) * sum of its
    emotion weights times the basic-class probabilities (a part the label does not
    define counts 0), normalised over the labels. Valence/arousal always come from
    the basic-class probabilities, so they do not depend on the label vocabulary.
    """
    cfg = emfacs_config()
    a = _check_aus(aus, list(au_codes))
    n = len(a)
    au_part, undecided = _au_scores(emfacs_evidence(a, au_codes),
                                    _activation(a, cfg))
    if cnn_probs is None:
        p8 = au_part + undecided[:, None] / len(EMOTIONS)
    else:
        p_cnn = _cnn_distribution(cnn_probs, n, cfg.cnn_prior)
        p8 = cfg.cnn_weight * p_cnn + (1 - cfg.cnn_weight) * (au_part + undecided[:, None] * p_cnn)
    valence, arousal = valence_arousal(p8)
    ls = label_set or DEFAULT
    if ls.is_default:
        return EmotionResult(p8.astype(np.float32), list(EMOTIONS), valence, arousal)

    pat_ev = emfacs_evidence(a, au_codes, ls).astype(np.float64)
    w_map = np.array([[w.get(c, 0.0) for c in EMOTIONS] for w in ls.emotion_weights]).T  # (8, L)
    # A label without a pattern (or without emotion weights) simply gets 0 for that
    # part, so every label is scored on the same scale.
    scores = cfg.pattern_weight * pat_ev + (1 - cfg.pattern_weight) * (p8 @ w_map)
    total = scores.sum(axis=1, keepdims=True)
    # Nothing supports any label (all patterns absent, all mapped classes at zero): uniform.
    probs = np.where(total > 1e-9, scores / np.maximum(total, 1e-9), 1.0 / len(ls.labels))
    return EmotionResult(probs.astype(np.float32), list(ls.labels), valence, arousal)


# ---------------------------------------------------------------------------------------
# 5. Compound labels


def compound_label(probs_row: np.ndarray, labels: list[str]) -> str:
    """The top label, or a Du, Tao & Martinez (2014) compound ("happily surprised") when
    the two strongest classes are both strong (thresholds in prompts/emfacs.yaml) and the
    pair is one of their named compounds."""
    p = np.asarray(probs_row, dtype=np.float64).ravel()
    if len(p) != len(labels) or len(p) == 0:
        raise FaceReasonError(
            f"compound_label: {len(p)} probabilities for {len(labels)} labels.")
    order = np.argsort(-p, kind="stable")
    top = labels[order[0]]
    if len(p) < 2:
        return top
    cfg = emfacs_config()
    first, second = p[order[0]], p[order[1]]
    name = cfg.compound_names.get(frozenset((top, labels[order[1]])))
    if (name and second >= cfg.compound_min_prob
            and second >= cfg.compound_min_ratio * first):
        return name
    return top
