"""The vocabularies emotion fusion scores over, and the EMFACS table behind them.

- `emfacs_config` parses prompts/emfacs.yaml: the AU prototypes of the seven
  non-neutral classes (Friesen & Ekman 1983) and the constants of scoring, fusion,
  the circumplex and compounds (docs/emotion.md says where each comes from).
- `load_label_set` reads a user's label set (a YAML path, or a name under
  prompts/labelsets/): labels, AU patterns and weights on the basic classes.
  `label_set_names` is the one list of names it accepts.

tools/emotion.py uses both; nothing here touches pixels or numbers of a face.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import prompts
from tools.errors import FaceReasonError
from tools.facs import AU_CODES, EMOTIONS, FER2013_CLASSES

PROMPTS = prompts.ROOT  # the pinned EMFACS table and label sets live with the prompts (design card)
EMFACS_PATH = PROMPTS / "emfacs.yaml"
LABELSET_DIR = PROMPTS / "labelsets"

# The seven non-neutral classes, in tools.facs.EMOTIONS order: emfacs_evidence's columns.
EMFACS_CLASSES: list[str] = [e for e in EMOTIONS if e != "neutral"]


class LabelSetError(FaceReasonError):
    """A label set or the EMFACS table is missing, malformed, or names unknown AUs/classes."""

    code = "bad_label_set"


# ---------------------------------------------------------------------------------------
# Patterns, the EMFACS table and label sets


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
