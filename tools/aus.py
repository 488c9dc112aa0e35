"""Action Units from a face track: FACS intensity (0-5) and occurrence per frame.

Where a frame becomes an AU vector, top to bottom:

1. `align`: the 478 MediaPipe points (pixels) are flipped into the frame of
   py-feat's AU->mesh model (y and z up/out) and rigidly aligned (rotation,
   scale, translation; Umeyama 1991) to its mean mesh on points that
   expressions barely move (forehead, nose bridge, eye corners, temples), so
   head motion does not read as expression.
2. `fit_pls`: the aligned mesh is explained as mean + sum_k a_k * (AU k's
   displacement field) + pose terms, with 0 <= a_k <= 1 (py-feat trained the
   model on intensities divided by 5), i.e. a bounded least-squares inversion
   of the learned linear map, solved for all frames at once.
3. Blendshapes: each AU's ARKit-style counterpart(s) (table `BLENDSHAPE_AU` and
   docs/aus.md), rescaled from a resting level to a full level.
4. Per-track neutral baseline (the median of the frames seen at rest, where a
   track has them, `rest_frames`; else a low percentile of each source over the
   track, shrunk towards the population rest for short tracks and stills), fusion of
   the two sources (AU12 capped by geometry: crying fires the smile blendshapes),
   median smoothing (keeps onsets sharp), eye closure split into blink (AU45,
   short) and eyes closed (AU43, sustained), occurrence with hysteresis.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import median_filter

from tools import assets
from tools.errors import FaceReasonError
from tools.facs import AU_CODES, AU_OCCURRENCE_THRESHOLD, BLENDSHAPE_NAMES

K = len(AU_CODES)
N_POINTS = 478

# Points that facial actions move least: forehead, nose bridge and tip, inner and
# outer eye corners, temples/cheekbones near the ears. The alignment is fitted on
# these only, so an open jaw or raised brows do not tilt the estimated head pose.
ANCHORS = np.array([10, 151, 9, 8, 168, 6, 197, 195, 5, 4, 1, 109, 338, 67, 297, 108, 337,
                    33, 133, 362, 263, 127, 356, 234, 454, 93, 323, 116, 345, 129, 358])
# Iris points follow gaze, not expression: left out of the AU fit. Only x and y
# are fitted: MediaPipe's z is inferred rather than seen, and the model's z fields
# share one common depth component that makes them near collinear (|cos| > 0.95).
_FIT_POINTS = slice(0, 468)
_FIT_AXES = slice(0, 2)

# AU -> blendshapes averaged as its evidence, with the blendshape level of a relaxed
# face ("rest", measured on the neutral stretches of the test media) and of a
# strong action ("full"). Why each row: docs/aus.md, table "Blendshape evidence".
BLENDSHAPE_AU: dict[str, tuple[tuple[str, ...], float, float]] = {
    "AU01": (("browInnerUp",), 0.05, 0.6),
    "AU02": (("browOuterUpLeft", "browOuterUpRight"), 0.08, 0.6),
    "AU04": (("browDownLeft", "browDownRight"), 0.02, 0.5),
    "AU05": (("eyeWideLeft", "eyeWideRight"), 0.01, 0.5),
    "AU07": (("eyeSquintLeft", "eyeSquintRight"), 0.35, 0.85),
    "AU10": (("mouthUpperUpLeft", "mouthUpperUpRight"), 0.02, 0.8),
    "AU12": (("mouthSmileLeft", "mouthSmileRight"), 0.02, 0.9),
    "AU14": (("mouthDimpleLeft", "mouthDimpleRight"), 0.02, 0.5),
    "AU15": (("mouthFrownLeft", "mouthFrownRight"), 0.01, 0.5),
    "AU17": (("mouthShrugLower",), 0.02, 0.5),
    "AU20": (("mouthStretchLeft", "mouthStretchRight"), 0.03, 0.6),
    "AU24": (("mouthPressLeft", "mouthPressRight"), 0.05, 0.6),
    "AU25": (("mouthLowerDownLeft", "mouthLowerDownRight", "jawOpen"), 0.02, 0.5),
    "AU26": (("jawOpen",), 0.03, 0.6),
    "AU28": (("mouthRollLower", "mouthRollUpper"), 0.02, 0.5),
    "AU43": (("eyeBlinkLeft", "eyeBlinkRight"), 0.15, 0.8),
}
# Which signal carries each AU (docs/aus.md, "Which signal carries each AU"):
# "geo" the PLS inversion, "bs" the blendshape, "mean" the average of both.
# AU06 and AU09 have no working blendshape (cheekSquint*/noseSneer* stay at 0 in
# this model) and AU23 no ARKit counterpart: geometry. AU12 and AU25 have their
# own rules in `estimate`.
SOURCE: dict[str, str] = {
    "AU01": "mean", "AU02": "mean", "AU04": "mean", "AU05": "bs", "AU06": "geo",
    "AU07": "bs", "AU09": "geo", "AU10": "bs", "AU14": "bs", "AU15": "bs", "AU17": "mean",
    "AU20": "bs", "AU23": "geo", "AU24": "mean", "AU26": "bs", "AU28": "bs", "AU43": "mean",
}
# FACS scores an AU only for appearance changes beyond those of a stronger action
# that produces look-alike changes: a strong AU12 raises the upper lip and deepens
# the nasolabial furrow (AU10-like) and stretches the lips (which the PLS reads as
# AU23/AU24 and, with the cheek raise, AU09); AU06 narrows the eye from below
# (AU07-like). Each AU here is reduced by the strongest of its look-alike sources, in
# each of its signals before they combine (`estimate`).
EXPLAINED_BY: dict[str, tuple[str, ...]] = {
    "AU10": ("AU12",), "AU09": ("AU12",), "AU23": ("AU12",), "AU24": ("AU12",), "AU07": ("AU06",),
}
# Lips part (AU25) is measured directly: the gap between the inner lips (points 13,
# 14) in the aligned mesh, in model units (face ~200 tall). Closed lips measure 0-1
# on the test media; LIP_GAP_FULL is a wide-open mouth. (The PLS mean mesh has its
# lips 8.2 units apart, so the model's own AU25 field cannot tell closed from open.)
LIP_GAP_REST = 1.5
LIP_GAP_FULL = 25.0

BASELINE_PERCENTILE = 10.0
BASELINE_MAX = 1.5  # a resting face may read up to this much as an AU; more is expression
BASELINE_FULL_S = 2.0  # tracks at least this long get the full per-track baseline
# Rest frames: where the track's blendshapes (after their own baseline) show no
# movement above REST_ACTIVITY and the lips are closed. Where a track has at least
# REST_MIN_S of them, each source's resting level is their median reading, capped at
# REST_MAX instead of BASELINE_MAX: the evidence says the face is at rest there, so a
# large reading is the person (or the PLS mean face's mismatch), not an expression.
REST_ACTIVITY = 1.0
# The actions whose blendshape only adds to a resting face. Left out: eye closure
# (blinks are not expressions) and the brow and chin channels (AU01, AU02, AU17,
# AU28), whose resting level a smile lowers (browInnerUp falls as the cheeks rise),
# so a percentile baseline taken over a smiling clip makes its rest read as movement.
REST_CUES = ("AU04", "AU05", "AU07", "AU10", "AU12", "AU14", "AU15", "AU20", "AU24", "AU26")
REST_MIN_S = 0.3
REST_MAX = 5.0
# AUs whose reading against a seen rest has a dead band: where the rest sits more than
# REST_FLOOR below the PLS mean face, the movement must first cover that distance.
# single_face.mp4 rests with his brows well above the mean face (AU04 -1.9 to -2.8 in
# the free fit, by landmarker mode); his smile brings them part of the way back (the
# cheek raise pulls the lateral brow down), which against the full rest read as AU04
# ~1.2 over the whole smile. FACS codes AU4 for the brows lowered and drawn together,
# not for that. On the tune half floors of -0.5, -1.0 and -1.5 tie (AU04 F1 0.60 ->
# 0.75, macro 0.548 -> 0.558); 0 makes the rest fire (FP rate 0.03), and -0.5 leaves
# the most margin on the test's own landmarks. The band is taken off after the fit:
# moving the offset itself left the rest's brow shape for the joint fit to explain
# with AU06 (0.5 at rest). (Reducing AU04 by AU06 as a look-alike took the crying
# frames' true AU4 away: tune AU04 F1 0.33.)
REST_FLOORED = ("AU04",)
REST_FLOOR = -0.5
REST_CLEAR = 0.05  # occlusion score at most this: a clearly seen face (fingers near the
                   # mouth score 0.1-0.35 without crossing the unreliable line)
BLINK_MAX_S = 0.5  # eye closures shorter than this are blinks (AU45), longer AU43
SMOOTH_S = 0.12
# Ridge on the AU coefficients (relative to the mean diagonal of the normal matrix):
# real meshes are not exactly in the model's span, and the inversion of near-
# collinear fields would otherwise turn that mismatch into large AU readings.
RIDGE = 0.02
LIFT_FULL = 10.0  # lip-corner lift (model units) of a broad smile  # median window
HYSTERESIS_OFF = 0.7  # occurrence switches off below this fraction of the threshold


class AUInputError(FaceReasonError):
    """Landmarks, blendshapes, pose or timestamps do not describe one face track."""

    code = "bad_au_input"


@dataclass
class AUResult:
    intensity: np.ndarray  # (n, K) float32, 0-5, columns = tools.facs.AU_CODES
    occurrence: np.ndarray  # (n, K) uint8 0/1


@dataclass(frozen=True)
class PLSModel:
    mean: np.ndarray  # (478, 3) mesh at zero AUs and zero pose
    basis: np.ndarray  # (23, 478, 3) displacement per unit of each input column
    columns: list[str]  # 20 AUs then Pitch, Yaw, Roll
    gram: np.ndarray  # (23, 23) normal matrix over the fitted points

    @property
    def n_aus(self) -> int:
        return sum(c.startswith("AU") for c in self.columns)

    def generate(self, aus: np.ndarray, pose: np.ndarray | None = None) -> np.ndarray:
        """Meshes (n, 478, 3) in the model frame for AUs (n, 20) on the model's 0-1 scale."""
        x = np.zeros((len(aus), len(self.columns)), np.float32)
        x[:, : self.n_aus] = aus
        if pose is not None:
            x[:, self.n_aus:] = pose
        return self.mean + np.einsum("nc,cpd->npd", x, self.basis)


@lru_cache(maxsize=1)
def pls_model() -> PLSModel:
    """py-feat's AU(+pose)->mesh PLS map (au_to_mesh_pls_v4.npz), as a linear basis."""
    z = np.load(assets.path("pyfeat-resources") / "au_to_mesh_pls_v4.npz")
    coef = z["coef"].astype(np.float64)  # (23, 1434), axis-major x | y | z
    basis = coef.reshape(len(coef), 3, N_POINTS).transpose(0, 2, 1)
    mean = z["intercept"].astype(np.float64).reshape(3, N_POINTS).T
    # The fitted displacement fields carry rigid parts (the whole mesh shifts or
    # turns a little with an AU in py-feat's own alignment). Observed meshes are
    # aligned on ANCHORS here, so express each field in that same frame: align
    # mean + eps * field and take the difference (the alignment is smooth, so this
    # is its linearisation). Without this, e.g. AU09 and yaw are 0.96 collinear.
    eps = 0.05
    moved = _align_model_frame(mean + eps * basis, mean)
    basis = (moved - mean) / eps
    flat = basis[:, _FIT_POINTS, _FIT_AXES].reshape(len(basis), -1)
    return PLSModel(mean=mean, basis=basis, columns=[str(c) for c in z["input_columns"]],
                    gram=flat @ flat.T)


def align(landmarks: np.ndarray) -> np.ndarray:
    """Rigidly align (n, 478, 3) pixel landmarks to the PLS mean mesh; returns (n, 478, 3)."""
    x = np.asarray(landmarks, np.float64) * np.array([1.0, -1.0, -1.0])  # image -> y up, z out
    return _align_model_frame(x, pls_model().mean)


def _align_model_frame(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Similarity-align meshes x (n, 478, 3) to ref on ANCHORS (Umeyama's method)."""
    a = x[:, ANCHORS]
    b = ref[ANCHORS]
    ma, mb = a.mean(1, keepdims=True), b.mean(0)
    ac, bc = a - ma, b - mb
    u, s, vt = np.linalg.svd(np.einsum("npi,pj->nij", ac, bc))
    d = np.sign(np.linalg.det(u @ vt))  # no reflections
    u[:, :, 2] *= d[:, None]
    s[:, 2] *= d
    rot = u @ vt
    scale = s.sum(1) / np.maximum((ac ** 2).sum((1, 2)), 1e-12)
    return (scale[:, None, None] * ((x - ma) @ rot)) + mb


def fit_pls(aligned: np.ndarray, offset: np.ndarray | None = None, iters: int = 150,
            ridge: float = RIDGE, free_pose: bool = True, bounded: bool = True) -> np.ndarray:
    """Bounded least-squares AU coefficients (n, 20), model scale 0-1, for aligned meshes.

    Solves min ||basis . a - (mesh - mean)||^2 + ridge*|a|^2 with 0 <= a_AU <= 1
    (pose terms free, or fixed at 0), for every frame at once by accelerated
    projected gradient (FISTA; Beck & Teboulle 2009) on the 23x23 normal equations
    with Jacobi preconditioning. scipy's lsq_linear gives the same answer one frame
    at a time, ~1 ms each; tests check the two agree. `offset` (n or 1, 20) is a
    per-track resting AU vector whose displacement is removed first.
    """
    m = pls_model()
    na = m.n_aus
    nv = len(m.columns) if free_pose else na
    flat = m.basis[:nv, _FIT_POINTS, _FIT_AXES].reshape(nv, -1)
    resid = (aligned[:, _FIT_POINTS, _FIT_AXES] - m.mean[_FIT_POINTS, _FIT_AXES])
    h = resid.reshape(len(aligned), -1) @ flat.T  # (n, nv)
    g = m.gram[:nv, :nv] + ridge * np.trace(m.gram[:na, :na]) / na * np.eye(nv)
    if offset is not None:
        h -= np.asarray(offset, np.float64) @ m.gram[:na, :nv]
    lo = np.r_[np.zeros(na) if bounded else np.full(na, -np.inf), np.full(nv - na, -np.inf)]
    hi = np.r_[np.ones(na) if bounded else np.full(na, np.inf), np.full(nv - na, np.inf)]
    # Work in variables scaled by sqrt(diag g): same minimiser, far better conditioning.
    d = 1.0 / np.sqrt(np.diag(g))
    gs = g * d[:, None] * d[None, :]
    hs = h * d
    los, his = lo / d, hi / d
    step = 1.0 / np.linalg.eigvalsh(gs).max()
    x = np.clip(np.linalg.solve(gs, hs.T).T, los, his)
    y, t = x.copy(), 1.0
    for _ in range(iters):
        x_new = np.clip(y - step * (y @ gs - hs), los, his)
        t_new = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        y = x_new + ((t - 1.0) / t_new) * (x_new - x)
        x, t = x_new, t_new
    return (x * d)[:, :na]


def blendshape_aus(blendshapes: np.ndarray) -> np.ndarray:
    """(n, K) FACS-scale evidence from blendshapes, NaN where an AU has no counterpart."""
    bs = np.asarray(blendshapes, np.float64)
    out = np.full((len(bs), K), np.nan)
    for au, (names, rest, full) in BLENDSHAPE_AU.items():
        v = bs[:, [BLENDSHAPE_NAMES.index(n) for n in names]].mean(1)
        out[:, AU_CODES.index(au)] = 5.0 * np.clip((v - rest) / (full - rest), 0.0, 1.0)
    return out


def geometry_aus(aligned: np.ndarray, ok: np.ndarray | None = None,
                 duration: float = 0.0, rest: np.ndarray | None = None) -> np.ndarray:
    """(n, K) FACS-scale evidence from the PLS inversion, NaN where the model has no AU.

    The per-track resting face is removed in the model's own coordinates: an
    unconstrained (ridge) fit gives each frame's AU reading, its low percentile
    over the track (or its median over `rest` frames, where given) is the
    person's resting shape, and the bounded fit then explains only the movement
    away from it. (Subtracting after the bounded fit
    does not work: a face whose rest shape reads as AU12 pins AU12 at the bound.)
    """
    m = pls_model()
    offset, dead = None, {}
    if duration > 0 and len(aligned) >= 3:
        free = fit_pls(aligned, iters=0, bounded=False)
        keep = np.ones(len(aligned), bool) if ok is None else ok
        if rest is not None:  # rest_frames' frames are reliable ones already
            level = _rest_level(free * 5.0, rest, lower=-REST_MAX)
            offset = level[None] / 5.0
            cols = list(m.columns[: m.n_aus])
            dead = {j: max(0.0, REST_FLOOR - level[j]) for j in map(cols.index, REST_FLOORED)}
        else:
            offset = _baseline(free * 5.0, np.repeat(keep[:, None], m.n_aus, 1), duration,
                               lower=-BASELINE_MAX)[None] / 5.0
    est = 5.0 * fit_pls(aligned, offset=offset)
    for j, d in dead.items():  # column j of the model: its dead band d
        est[:, j] = np.maximum(est[:, j] - d, 0.0)
    out = np.full((len(aligned), K), np.nan)
    for j, au in enumerate(m.columns[: m.n_aus]):
        if au in AU_CODES:
            out[:, AU_CODES.index(au)] = est[:, j]
    return out


def lip_corner_lift(aligned: np.ndarray) -> np.ndarray:
    """Height of the lip corners above the lips' midpoint, in model units (face ~200)."""
    return aligned[:, [61, 291], 1].mean(1) - aligned[:, [13, 14], 1].mean(1)


def lips_part(aligned: np.ndarray) -> np.ndarray:
    """AU25 on the FACS 0-5 scale from the inner-lip gap of aligned meshes (n, 478, 3)."""
    gap = aligned[:, 13, 1] - aligned[:, 14, 1]
    return 5.0 * np.clip((gap - LIP_GAP_REST) / (LIP_GAP_FULL - LIP_GAP_REST), 0.0, 1.0)


def _baseline(x: np.ndarray, ok: np.ndarray, duration: float,
              lower: float = 0.0) -> np.ndarray:
    """Per-column resting level: a low percentile over reliable frames, shrunk to 0
    for short tracks (a 1 s clip may be one expression throughout) and capped."""
    if duration <= 0 or len(x) < 3:
        return np.zeros(x.shape[1])
    masked = np.where(ok & ~np.isnan(x), x, np.nan)
    with warnings.catch_warnings():  # columns with no reliable frame: baseline 0
        warnings.simplefilter("ignore", RuntimeWarning)
        b = np.nanpercentile(masked, BASELINE_PERCENTILE, axis=0)
    b = np.nan_to_num(b, nan=0.0)
    return np.clip(b, lower, BASELINE_MAX) * min(1.0, duration / BASELINE_FULL_S)


def rest_frames(bsa: np.ndarray, lips: np.ndarray, ok: np.ndarray,
                timestamps: np.ndarray) -> np.ndarray | None:
    """(n,) True where a track's face is at rest, or None where the track has too
    little rest to tell (stills, short clips, one expression throughout).

    At rest = every blendshape AU in REST_CUES below REST_ACTIVITY after the
    track's own baseline, and the lips closed.
    """
    if len(timestamps) < 3:
        return None
    moving = bsa[:, [AU_CODES.index(a) for a in REST_CUES]]
    rest = ok & (moving.max(1) < REST_ACTIVITY) & (lips < REST_ACTIVITY)
    fps = (len(timestamps) - 1) / max(float(timestamps[-1] - timestamps[0]), 1e-6)
    return rest if rest.sum() >= max(3, REST_MIN_S * fps) else None


def _rest_level(x: np.ndarray, rest: np.ndarray, lower: float) -> np.ndarray:
    """Per-column resting level from the frames seen at rest (NaN columns, AUs a
    source does not measure, read 0)."""
    return np.clip(np.nan_to_num(np.median(x[rest], axis=0), nan=0.0), lower, REST_MAX)


def _median_time(x: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    if len(x) < 3:
        return x
    dt = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 1.0
    size = max(3, int(round(SMOOTH_S / max(dt, 1e-3))) | 1)
    return median_filter(x, size=(size, 1), mode="nearest")


def _hysteresis(x: np.ndarray, on: float, off: float) -> np.ndarray:
    """0/1 per column: switches on at >= on, stays on until < off (vectorised)."""
    idx = np.arange(len(x))[:, None]
    last_on = np.maximum.accumulate(np.where(x >= on, idx, -1), axis=0)
    last_off = np.maximum.accumulate(np.where(x < off, idx, -1), axis=0)
    return (last_on > last_off).astype(np.uint8)


def _split_closure(closure: np.ndarray, timestamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eye closure -> (AU43, AU45): closed runs shorter than BLINK_MAX_S are blinks."""
    closed = closure >= AU_OCCURRENCE_THRESHOLD
    if len(closure) < 2:  # a still: no duration, so an eye closure is AU43
        return closure, np.zeros_like(closure)
    edges = np.diff(np.r_[0, closed.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    blink = np.zeros(len(closure), bool)
    dt = float(np.median(np.diff(timestamps)))
    for s, e in zip(starts, ends, strict=True):
        if timestamps[e - 1] - timestamps[s] + dt < BLINK_MAX_S:
            blink[s:e] = True
    return np.where(blink, 0.0, closure), np.where(blink, closure, 0.0)


def _check(landmarks, blendshapes, pose, timestamps, reliable):
    lm = np.asarray(landmarks, np.float64)
    n = len(lm)
    if lm.ndim != 3 or lm.shape[1:] != (N_POINTS, 3):
        raise AUInputError(f"landmarks must have shape (n, {N_POINTS}, 3); got {lm.shape}.")
    bs = np.asarray(blendshapes, np.float64)
    if bs.shape != (n, len(BLENDSHAPE_NAMES)):
        raise AUInputError(f"blendshapes must have shape ({n}, {len(BLENDSHAPE_NAMES)}); "
                           f"got {bs.shape}.")
    if np.asarray(pose).shape != (n, 3):
        raise AUInputError(f"pose must have shape ({n}, 3); got {np.asarray(pose).shape}.")
    ts = np.asarray(timestamps, np.float64)
    if ts.shape != (n,):
        raise AUInputError(f"timestamps must have shape ({n},); got {ts.shape}.")
    if n > 1 and np.any(np.diff(ts) <= 0):
        raise AUInputError("timestamps must be strictly increasing within a track.")
    if not (np.isfinite(lm).all() and np.isfinite(bs).all()):
        raise AUInputError("landmarks and blendshapes must be finite numbers.")
    rel = np.ones((n, K), bool) if reliable is None else np.asarray(reliable).astype(bool)
    if rel.shape != (n, K):
        raise AUInputError(f"reliable must have shape ({n}, {K}); got {rel.shape}.")
    return lm, bs, ts, rel


def estimate(landmarks: np.ndarray, blendshapes: np.ndarray, pose: np.ndarray,
             timestamps: np.ndarray, reliable: np.ndarray | None = None,
             occlusion: np.ndarray | None = None) -> AUResult:
    """AU intensity (0-5) and occurrence for one face track (or one still, n = 1).

    Pose is removed geometrically (rigid alignment) rather than from `pose`, which
    is accepted for the interface and validated. Where `reliable` is 0 (an
    occluded region) the AU is reported as 0 / not occurring and left out of the
    baseline; consumers read au_reliable to tell "absent" from "not visible".
    `occlusion` (n,) scores (tools.occlusion.score) keep partly covered frames,
    even those below the unreliable line, out of the resting reference.
    """
    lm, bs, ts, rel = _check(landmarks, blendshapes, pose, timestamps, reliable)
    n = len(lm)
    if n == 0:
        return AUResult(np.zeros((0, K), np.float32), np.zeros((0, K), np.uint8))
    duration = float(ts[-1] - ts[0]) if n > 1 else 0.0
    aligned = align(lm)
    raw = blendshape_aus(bs)
    bsa = np.clip(raw - _baseline(raw, rel, duration), 0, 5)
    clear = rel.all(1) if occlusion is None else rel.all(1) & (np.asarray(occlusion) <= REST_CLEAR)
    rest = rest_frames(bsa, lips_part(aligned), clear, ts)
    if rest is not None:  # the resting face, where it is seen, is the reference
        bsa = np.clip(raw - _rest_level(raw, rest, lower=0.0), 0, 5)
    geo = geometry_aus(aligned, rel.all(1), duration, rest)
    lift = lip_corner_lift(aligned)[:, None]
    lift_rest = _baseline(lift, rel[:, [AU_CODES.index("AU12")]], duration, lower=-np.inf)
    if duration <= 0:  # a still: the population mean face is the reference
        lift_rest = lip_corner_lift(pls_model().mean[None])
    lift_au = 5.0 * np.clip((lift[:, 0] - lift_rest[0]) / LIFT_FULL, 0.0, 1.0)
    fused = np.zeros((n, K))
    for au, src in SOURCE.items():
        if au not in EXPLAINED_BY:
            j = AU_CODES.index(au)
            fused[:, j] = {"geo": geo[:, j], "bs": bsa[:, j], "mean": 0.5 * (geo[:, j] + bsa[:, j])}[src]
    # Crying fires mouthSmile* together with brow lowering and closed eyes; the
    # geometry (lip corners actually moving up and out) has to agree for AU12.
    j12 = AU_CODES.index("AU12")
    fused[:, j12] = np.minimum(bsa[:, j12], lift_au + 0.5)
    fused[:, AU_CODES.index("AU25")] = lips_part(aligned)
    fused = np.nan_to_num(fused, nan=0.0)
    # The look-alike rule, per source: each signal keeps what the stronger action does
    # not explain, then the sources combine. (Subtracting from their mean took twice the
    # look-alike off the one signal that saw the action: the pressed lips of crying.)
    for au, by in EXPLAINED_BY.items():
        j, look = AU_CODES.index(au), fused[:, [AU_CODES.index(b) for b in by]].max(1)
        left = {name: np.clip(np.nan_to_num(x[:, j]) - look, 0.0, None) for name, x in (("geo", geo), ("bs", bsa))}
        fused[:, j] = 0.5 * (left["geo"] + left["bs"]) if SOURCE[au] == "mean" else left[SOURCE[au]]
    fused = _median_time(fused, ts)
    j43, j45 = AU_CODES.index("AU43"), AU_CODES.index("AU45")
    fused[:, j43], fused[:, j45] = _split_closure(fused[:, j43], ts)
    fused = np.where(rel, np.clip(fused, 0.0, 5.0), 0.0).astype(np.float32)
    occ = _hysteresis(fused, AU_OCCURRENCE_THRESHOLD, HYSTERESIS_OFF * AU_OCCURRENCE_THRESHOLD)
    return AUResult(intensity=fused, occurrence=occ & rel.astype(np.uint8))
