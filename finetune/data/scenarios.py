"""What happens on a synthetic face, and its truth.

A scenario kind ("crying_then_laughing", "polite_smile", ...) is drawn into a
`FaceSpec`: expression phases with their AU apex intensities and dynamics
(from the EMFACS prototypes, prompts/emfacs.yaml), blinks, speech, occlusion,
a resting face and twitches. The truth the training targets use (`label`,
`true_aus`, `segment_order`) is read from the spec, never from measurements.
finetune/data/synthetic.py renders a spec into what the perception tools measure.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

import prompts
from tools.facs import AU_CODES, EMOTIONS

NEUTRAL = "neutral"
# Spontaneous low-level facial activity (not part of any expression): this many
# brief AU twitches per second, peaking at 0.6-1.8 on the 0-5 scale.
TWITCH_RATE = 0.5
# An AU belongs to the true expression when its apex intensity reaches this (FACS "B").
TRUE_AU_MIN = 1.5
# A resting stretch this long between phases counts as a neutral segment of the truth.
REST_MIN_S = 0.5

# Scenario kinds and how often each is drawn.
SCENARIOS: dict[str, float] = {
    "single": 0.22,          # neutral -> expression -> (neutral)
    "steady": 0.10,          # one expression throughout
    "sequence": 0.12,        # one expression turns into another
    "blend": 0.06,           # two expressions at once, one dominant
    "neutral": 0.08,         # resting face, blinks, head motion
    "speech": 0.06,          # talking: AU25/AU26 oscillate, label neutral
    "crying": 0.08,          # sadness AUs + smile blendshapes firing, CNN reads a grin
    "crying_then_laughing": 0.04,  # the crying above, then real laughter (WolfgangLanger_Pexels.mp4)
    "polite_smile": 0.06,    # AU12 without AU06
    "contempt_smirk": 0.05,  # AU12 + AU14 at low intensity
    "fear_vs_surprise": 0.07,  # fear, CNN says surprise
    "surprise_vs_fear": 0.06,  # surprise, CNN says fear
}
CONFUSERS = ("crying", "crying_then_laughing", "polite_smile", "contempt_smirk", "fear_vs_surprise", "surprise_vs_fear",
             "speech")
COVERED_MIDDLE_SHARE = 0.6  # crying_then_laughing clips with a hand over the face in between


@dataclass
class Phase:
    """One expression phase: AU apex intensities, times, and the CNN row it shows."""

    label: str
    aus: dict[str, float]
    onset: float
    apex: float
    offset: float
    release: float
    cnn: str = ""  # key into cnn_confusion.yaml rows/confusers; default: the label's row
    smile_blendshape: float = 0.0  # crying: mouthSmile* level with no geometric smile


@dataclass
class FaceSpec:
    track_id: int
    identity: str
    start: float
    end: float
    phases: list[Phase]
    scenario: str
    blinks: list[float] = field(default_factory=list)
    speech: list[tuple[float, float]] = field(default_factory=list)
    occlusions: list[tuple[float, float, str]] = field(default_factory=list)  # start, end, region
    head_motion_deg: float = 4.0
    rest: dict[str, float] = field(default_factory=dict)
    twitches: list[tuple[str, float, float, float]] = field(default_factory=list)  # au, centre, half, peak
    flicker: list[tuple[float, float]] = field(default_factory=list)  # CNN unsettled (covered face)

    @property
    def label(self) -> str:
        """The expressive phase held longest (apex to release); neutral when none."""
        expressive = [p for p in self.phases if p.label != NEUTRAL]
        if not expressive:
            return NEUTRAL
        return max(expressive, key=lambda p: (p.release - p.apex, max(p.aus.values(), default=0))).label

    @property
    def true_aus(self) -> list[str]:
        out = set()
        for p in self.phases:
            out |= {a for a, v in p.aus.items() if v >= TRUE_AU_MIN}
        return sorted(out)

    @property
    def segment_order(self) -> list[str]:
        """Labels in time order, neutral before/between/after phases where the face rests."""
        order: list[str] = []

        def add(lab):
            if not order or order[-1] != lab:
                order.append(lab)

        t = self.start
        for p in sorted(self.phases, key=lambda p: p.onset):
            if p.onset - t >= REST_MIN_S:
                add(NEUTRAL)
            add(p.label)
            t = max(t, p.release)
        if self.end - t >= REST_MIN_S or not self.phases:
            add(NEUTRAL)
        return order


@functools.cache
def _emfacs() -> dict:
    return prompts.load_yaml("emfacs")


def _prototype(label: str, rng: np.random.Generator, strong: bool = True) -> dict[str, float]:
    """AU apex intensities from one EMFACS prototype or variant of `label`."""
    protos = [p for p in _emfacs()["classes"][label]["prototypes"] if p["weight"] >= 0.8]
    p = protos[rng.integers(len(protos))]
    out = {}
    for item in p["aus"]:
        code = str(rng.choice(item.split("|")))
        lo, hi = (2.0, 4.5) if strong else (1.3, 2.5)
        out[code] = float(rng.uniform(lo, hi))
    return out


def _phase(label: str, t0: float, t1: float, rng: np.random.Generator, aus: dict[str, float] | None = None,
           cnn: str = "", smile_bs: float = 0.0) -> Phase:
    dur = t1 - t0
    rise = min(rng.uniform(0.2, 0.6), dur / 3)
    fall = min(rng.uniform(0.2, 0.7), dur / 3)
    return Phase(label, aus if aus is not None else _prototype(label, rng), t0, t0 + rise,
                 t1 - fall, t1, cnn, smile_bs)


BASIC = [e for e in EMOTIONS if e != NEUTRAL]


def scenario_spec(kind: str, rng: np.random.Generator, track_id: int, identity: str,
                  start: float, end: float) -> FaceSpec:
    """Phases, blinks, speech and occlusion for one face of a scenario `kind`."""
    dur = end - start
    mid0 = start + rng.uniform(0.15, 0.3) * dur
    mid1 = start + rng.uniform(0.7, 0.95) * dur
    phases: list[Phase] = []
    speech: list[tuple[float, float]] = []
    flicker: list[tuple[float, float]] = []
    covered: list[tuple[float, float, str]] = []
    spill: list[tuple[str, float, float, float]] = []
    if kind == "single":
        phases = [_phase(str(rng.choice(BASIC)), mid0, mid1, rng)]
    elif kind == "steady":
        phases = [_phase(str(rng.choice(BASIC)), start, end + 0.5, rng)]
    elif kind == "sequence":
        a, b = rng.choice(BASIC, 2, replace=False)
        cut = start + rng.uniform(0.4, 0.55) * dur
        phases = [_phase(str(a), start + 0.1 * dur, cut, rng),
                  _phase(str(b), cut, end + 0.5, rng)]
    elif kind == "blend":
        a, b = rng.choice(BASIC, 2, replace=False)
        main = _prototype(str(a), rng)
        extra = {k: v for k, v in _prototype(str(b), rng, strong=False).items() if k not in main}
        phases = [_phase(str(a), mid0, mid1, rng, {**main, **extra})]
    elif kind == "speech":
        speech = [(start + 0.1 * dur, end - 0.1 * dur)]
    elif kind in ("crying", "crying_then_laughing"):
        aus = {"AU01": rng.uniform(2, 4), "AU04": rng.uniform(2, 4), "AU15": rng.uniform(1.5, 3.5),
               "AU17": rng.uniform(1.5, 3.5), "AU06": rng.uniform(1.5, 3.0), "AU43": rng.uniform(1.5, 3.0)}
        if kind == "crying":
            phases = [_phase("sadness", mid0, mid1, rng, aus, cnn="crying_smile",
                             smile_bs=float(rng.uniform(0.45, 0.8)))]
        else:  # the override of the crying must not swallow the laughter that follows it
            laugh_share = float(rng.uniform(0.38, 0.55))
            laugh_on = start + laugh_share * dur
            laugh = {"AU06": rng.uniform(3, 4.5), "AU12": rng.uniform(3, 4.5), "AU25": rng.uniform(2, 4),
                     "AU26": rng.uniform(1.5, 3.5)}
            phases = [_phase("sadness", start + 0.05 * dur, laugh_on, rng, aus, cnn="crying_smile",
                             smile_bs=float(rng.uniform(0.45, 0.8))),
                      _phase("happiness", laugh_on, end + 0.5, rng, laugh)]
            if rng.random() < COVERED_MIDDLE_SHARE:
                # WolfgangLanger_Pexels.mp4: a hand over the face between the crying and the
                # laughter. The occlusion detector flags only the first part of it, the CNN
                # flickers between disgust and fear, and the hand's shadow raises AU09/AU02/AU24
                # spill-over; none of that is an expression of its own.
                # The crying before the hand lasts 15-33% of the clip (29% on that clip, whose
                # covered stretch splits into ~1 s disgust/fear segments at every frame).
                c0 = start + rng.uniform(0.15, min(0.33, laugh_share - 0.1)) * dur
                flicker = [(c0, laugh_on)]
                covered = [(c0, c0 + float(rng.uniform(0.1, 0.35)) * (laugh_on - c0), "mouth")]
                spill = [(au, float(rng.uniform(c0, laugh_on)), float(rng.uniform(0.5, 1.5)),
                          float(rng.uniform(3.0, 4.5))) for au in ("AU09", "AU02", "AU09", "AU24")]
    elif kind == "polite_smile":
        phases = [_phase("happiness", mid0, mid1, rng, {"AU12": rng.uniform(1.8, 3.0)}, cnn="polite_smile")]
    elif kind == "contempt_smirk":
        phases = [_phase("contempt", mid0, mid1, rng,
                         {"AU14": rng.uniform(1.8, 3.0), "AU12": rng.uniform(1.0, 1.6)}, cnn="contempt_smirk")]
    elif kind == "fear_vs_surprise":
        aus = {"AU01": rng.uniform(2, 4), "AU02": rng.uniform(2, 4), "AU04": rng.uniform(1.8, 3.5),
               "AU05": rng.uniform(2, 4), "AU20": rng.uniform(1.8, 3.5), "AU26": rng.uniform(1.5, 3.5)}
        phases = [_phase("fear", mid0, mid1, rng, aus, cnn="fear_as_surprise")]
    elif kind == "surprise_vs_fear":
        aus = {"AU01": rng.uniform(2, 4), "AU02": rng.uniform(2, 4), "AU05": rng.uniform(2, 4),
               "AU26": rng.uniform(2, 4)}
        phases = [_phase("surprise", mid0, mid1, rng, aus, cnn="surprise_as_fear")]
    elif kind != "neutral":
        raise ValueError(f"unknown scenario {kind!r}; known: {sorted(SCENARIOS)}")
    blinks = sorted(rng.uniform(start, end, int(rng.poisson(dur / 4.0))).tolist())
    occl = list(covered)
    if not covered and dur > 3 and rng.random() < 0.15:
        o0 = float(rng.uniform(start + 0.5, end - 1.2))
        occl.append((o0, o0 + float(rng.uniform(0.4, 1.0)), str(rng.choice(["mouth", "eye_l", "brow_l"]))))
    rest = {str(a): float(rng.uniform(0, 0.9)) for a in rng.choice(AU_CODES[:17], 3, replace=False)}
    twitches = [(str(rng.choice(AU_CODES[:17])), float(rng.uniform(start, end)), float(rng.uniform(0.15, 0.5)),
                 float(rng.uniform(0.6, 1.8))) for _ in range(int(rng.poisson(TWITCH_RATE * max(dur, 1.0))))]
    return FaceSpec(track_id, identity, start, end, phases, kind, blinks, speech, occl,
                    float(rng.uniform(1.0, 8.0)), rest, twitches + spill, flicker)
