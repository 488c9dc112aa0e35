"""Emotion from a face: appearance CNN + EMFACS evidence from Action Units, fused.

Per frame of a face track:

1. `align_crop` (tools/emotion_cnn.py) turns the RGB frame and the face's 478
   MediaPipe landmarks into a 64x64 grey crop with the eyes level.
2. `EmotionCNN.predict` (tools/emotion_cnn.py: fer's mini-Xception, ported to
   PyTorch once and run as ONNX under cv2.dnn) gives 7 FER2013 probabilities per crop.
3. `emfacs_evidence` scores how well the AU intensities match the EMFACS
   prototypes pinned in prompts/emfacs.yaml (Friesen & Ekman 1983; parsed in
   tools/labelsets.py, with the users' label sets).
4. `fuse` pools both into probabilities over tools.facs.EMOTIONS (or a user's
   label set) plus valence/arousal from circumplex positions (Russell 1980).
5. `compound_label` names two strong classes as a compound (Du et al. 2014).

docs/emotion.md explains every number used here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tools.emotion_cnn import EmotionCNN, align_crop, get_cnn
from tools.errors import FaceReasonError
from tools.facs import EMOTIONS, FER2013_CLASSES
from tools.labelsets import (
    DEFAULT,
    EMFACS_CLASSES,
    EmfacsConfig,
    LabelSet,
    LabelSetError,
    Pattern,
    emfacs_config,
    label_set_names,
    load_label_set,
)

__all__ = [
    "EmotionCNN", "EmotionResult", "LabelSet", "LabelSetError", "Pattern", "align_crop",
    "compound_label", "emfacs_evidence", "fuse", "get_cnn", "label_set_names", "load_label_set",
    "valence_arousal", "DEFAULT", "EMFACS_CLASSES", "EmfacsConfig",
]

# ---------------------------------------------------------------------------------------
# 1. EMFACS evidence


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
# 2. Fusion, valence/arousal


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
# 3. Compound labels


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
