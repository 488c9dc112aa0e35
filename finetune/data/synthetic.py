"""Synthetic labelled face timelines in the tools' own feature space.

A *scenario* (what happens on the face, with its true label) is turned into
what the perception tools would have measured, by running the real tools on
synthetic raw inputs rather than drawing AU numbers directly:

1. AU intensity curves (FACS 0-5) per expression phase, with onset/apex/offset
   dynamics, from the pinned EMFACS prototypes and variants (prompts/emfacs.yaml),
   plus blinks, speech-like mouth motion and a per-identity resting face.
2. Meshes from py-feat's AU->mesh PLS model (tools.aus.pls_model().generate),
   turned by the head pose, scaled into pixels and jittered like MediaPipe
   landmarks; blendshapes from the same curves through the blendshape table
   tools.aus uses (BLENDSHAPE_AU), with noise.
3. tools.aus.estimate on those meshes and blendshapes: AU intensity and
   occurrence carry the estimator's own errors (collinear fields, baseline,
   smoothing, blink split).
4. A simulated appearance-CNN output (cnn_confusion.yaml) fused with the AU
   evidence by tools.emotion.fuse; valence/arousal from it.
5. Occlusion (hand over the face) through tools.occlusion.REGION_AUS's region
   map, then tools.timeline.annotate for segments, events and summary.

The labels come from the scenario, never from the measurements: `label`, the
true `aus` of its expressions, `segment_order`, plus `observed_aus` (what the
measurements show, for the faithfulness reward). Hard confusers follow what
real video shows: crying that fires the smile blendshapes, polite (AU12 only)
vs felt (AU06+AU12) smiles, contempt smirks, fear read as surprise by the CNN
and the reverse, and talking mouths.

Noise levels are documented in docs/training.md ("Calibration").
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from scipy.spatial.transform import Rotation

from finetune.data.scenarios import CONFUSERS, NEUTRAL, SCENARIOS, FaceSpec, Phase, scenario_spec
from tools import assets, emotion, occlusion, timeline
from tools import aus as au_est
from tools.analysis import Analysis, Sampling, SourceInfo, Track
from tools.facs import AU_CODES, BLENDSHAPE_NAMES, FER2013_CLASSES

# Landmark jitter (pixels, for a face ~200 px tall) and blendshape noise (score
# units): see docs/training.md, "Calibration".
LANDMARK_NOISE_PX = 1.0
BLENDSHAPE_NOISE = 0.05
# Amplitude (model units; the face is ~200 wide) of a person's shape away from the mean face.
IDENTITY_SHAPE = 2.5
# ... and of a person's expression away from the model's AU fields, at full activation.
EXPRESSION_MISMATCH = 5.0
FLICKER_ROWS = ("disgust", "fear")
@dataclass
class Example:
    """One labelled face of a synthetic clip."""

    id: str
    clip_id: str
    identity: str
    scenario: str
    confuser: bool
    track_id: int
    label: str
    aus: list[str]
    segment_order: list[str]


@functools.cache
def _cnn_table() -> dict:
    return yaml.safe_load(Path(__file__).with_name("cnn_confusion.yaml").read_text())


# ----------------------------------------------------------------- rendering
def _envelope(ts: np.ndarray, p: Phase) -> np.ndarray:
    """0..1 activation: smooth rise to apex, hold, smooth fall (cosine ramps)."""
    up = np.clip((ts - p.onset) / max(p.apex - p.onset, 1e-3), 0, 1)
    down = np.clip((p.release - ts) / max(p.release - p.offset, 1e-3), 0, 1)
    return 0.5 - 0.5 * np.cos(np.pi * np.minimum(up, down))


def au_curves(spec: FaceSpec, ts: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """True AU intensities (n, 20 PLS columns, FACS 0-5) and the extra smile-blendshape level (n,)."""
    cols = au_est.pls_model().columns[: au_est.pls_model().n_aus]
    x = np.zeros((len(ts), len(cols)))
    smile_bs = np.zeros(len(ts))
    for a, v in spec.rest.items():
        if a in cols:
            x[:, cols.index(a)] += v
    for p in spec.phases:
        env = _envelope(ts, p)
        # Apex intensity wavers a little (real expressions are not flat plateaus).
        waver = 1 + 0.08 * np.sin(2 * np.pi * rng.uniform(0.2, 0.6) * ts + rng.uniform(0, 6))
        for a, v in p.aus.items():
            if a in cols:
                x[:, cols.index(a)] = np.maximum(x[:, cols.index(a)], v * env * waver)
        smile_bs = np.maximum(smile_bs, p.smile_blendshape * env)
    for a, c, half, peak in spec.twitches:
        if a in cols:
            x[:, cols.index(a)] = np.maximum(x[:, cols.index(a)],
                                             peak * np.clip(1 - np.abs(ts - c) / half, 0, 1))
    j43 = cols.index("AU43")
    for b in spec.blinks:  # a blink closes the eyes for ~0.1-0.25 s
        half = rng.uniform(0.05, 0.12)
        x[:, j43] = np.maximum(x[:, j43], 4.5 * np.clip(1 - np.abs(ts - b) / half, 0, 1))
    for s0, s1 in spec.speech:  # syllable rate ~4 Hz: the jaw and lips open and close
        on = (ts >= s0) & (ts <= s1)
        f = rng.uniform(3.0, 5.0)
        wave = np.clip(np.sin(2 * np.pi * f * ts + rng.uniform(0, 6)), 0, 1)
        x[on, cols.index("AU25")] = np.maximum(x[on, cols.index("AU25")], 2.2 * wave[on])
        x[on, cols.index("AU26")] = np.maximum(x[on, cols.index("AU26")], 1.6 * wave[on])
    return np.clip(x, 0, 5), smile_bs


def _blendshapes(x: np.ndarray, cols: list[str], smile_bs: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """MediaPipe-style blendshape scores from true AU intensities (tools.aus.BLENDSHAPE_AU)."""
    n = len(x)
    bs = np.clip(rng.normal(0.02, 0.01, (n, len(BLENDSHAPE_NAMES))), 0, 1)
    for au, (names, rest, full) in au_est.BLENDSHAPE_AU.items():
        if au not in cols:
            continue
        level = rest + (full - rest) * x[:, cols.index(au)] / 5.0
        for name in names:
            j = BLENDSHAPE_NAMES.index(name)
            bs[:, j] = np.maximum(bs[:, j], level + rng.normal(0, BLENDSHAPE_NOISE, n))
    for name in ("mouthSmileLeft", "mouthSmileRight"):
        j = BLENDSHAPE_NAMES.index(name)
        bs[:, j] = np.maximum(bs[:, j], smile_bs + rng.normal(0, BLENDSHAPE_NOISE, n))
    bs = np.clip(bs, 0, 1)
    bs[:, 0] = np.clip(1 - bs[:, 1:].max(1), 0, 1)  # _neutral
    return bs.astype(np.float32)


@functools.cache
def _raw_pls() -> tuple[np.ndarray, np.ndarray]:
    """py-feat's AU->mesh map as fitted (mean, basis), not tools.aus's re-aligned copy:
    its fields carry the small rigid parts real meshes show, so the estimator's inversion
    is not handed meshes exactly in its own span."""
    z = np.load(assets.path("pyfeat-resources") / "au_to_mesh_pls_v4.npz")
    n = au_est.N_POINTS
    basis = z["coef"].astype(np.float64).reshape(-1, 3, n).transpose(0, 2, 1)
    mean = z["intercept"].astype(np.float64).reshape(3, n).T
    return mean, basis


def _smooth_field(rng: np.random.Generator, amplitude: float) -> np.ndarray:
    """A smooth random deformation of the mean mesh (model units): a few low-frequency
    waves over the face, outside the AU fields' span."""
    mean, _ = _raw_pls()
    c = (mean - mean.mean(0)) / np.abs(mean - mean.mean(0)).max(0)
    field = np.zeros_like(mean)
    for _ in range(4):
        k = rng.normal(0, 1.5, 3)
        field += np.sin(c @ k + rng.uniform(0, 6))[:, None] * rng.normal(0, amplitude, 3)
    return field


def _mesh_pixels(x: np.ndarray, pose: np.ndarray, scale: float, centre: np.ndarray,
                 shape: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Pixel landmarks (n, 478, 3): PLS mesh + off-model shape (n or 1, 478, 3), rotated by
    pose, scaled, jittered."""
    mean, basis = _raw_pls()
    inputs = np.zeros((len(x), len(basis)))
    inputs[:, : x.shape[1]] = x / 5.0  # the model's AU inputs are intensities / 5
    mesh = mean + shape + np.einsum("nc,cpd->npd", inputs, basis)
    rot = Rotation.from_euler("xyz", pose, degrees=True).as_matrix()
    px = np.einsum("npi,nji->npj", mesh, rot) * scale
    px = px * np.array([1.0, -1.0, -1.0]) + np.array([centre[0], centre[1], 0.0])
    return px + rng.normal(0, LANDMARK_NOISE_PX, px.shape)


def _cnn_probs(spec: FaceSpec, ts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    tab = _cnn_table()
    rows = {**tab["rows"], **tab["confusers"]}
    neutral = np.asarray(tab["rows"][NEUTRAL], float)
    p = np.tile(neutral, (len(ts), 1))
    for ph in spec.phases:
        row = np.asarray(rows[ph.cnn or ph.label], float)
        env = _envelope(ts, ph)[:, None]
        p = np.where(env > 0, (1 - env) * p + env * row, p)
    if spec.speech:
        on = np.zeros(len(ts), bool)
        for s0, s1 in spec.speech:
            on |= (ts >= s0) & (ts <= s1)
        p[on] = np.asarray(rows["speech"], float)
    for f0, f1 in spec.flicker:  # a covered face: a new wrong reading every few frames
        t = f0
        while t < f1:
            step = float(rng.uniform(0.25, 0.7))
            p[(ts >= t) & (ts < min(t + step, f1))] = np.asarray(rows[str(rng.choice(FLICKER_ROWS))], float)
            t += step
    p = np.clip(p, 1e-3, None)
    p /= p.sum(1, keepdims=True)
    out = np.stack([rng.dirichlet(tab["concentration"] * r) for r in p])
    assert out.shape[1] == len(FER2013_CLASSES)
    return out.astype(np.float32)


def render_track(spec: FaceSpec, ts: np.ndarray, rng: np.random.Generator,
                 frame_size: tuple[int, int] = (640, 360)) -> Track:
    """Measure one synthetic face with the real tools (see module doc)."""
    n = len(ts)
    cols = au_est.pls_model().columns[: au_est.pls_model().n_aus]
    x, smile_bs = au_curves(spec, ts, rng)
    # Head motion: a slow random walk around a per-face mean pose.
    mean_pose = rng.normal(0, [5, 10, 3])
    walk = np.cumsum(rng.normal(0, 1, (n, 3)), 0)
    walk = walk / max(np.abs(walk).max(), 1e-6) * spec.head_motion_deg
    pose = (mean_pose + walk).astype(np.float32)
    scale = float(rng.uniform(0.6, 1.2))
    centre = np.array([rng.uniform(0.3, 0.7) * frame_size[0], rng.uniform(0.4, 0.6) * frame_size[1]])
    # Off-model shape: the person's own face, plus how this person's expressions differ
    # from the model's fields (grows with each phase's activation). Real meshes are not
    # in the model's span, and the estimator turns the mismatch into spill-over AUs.
    id_rng = np.random.default_rng(int(hashlib.sha256(spec.identity.encode()).hexdigest()[:8], 16))
    shape = np.repeat(_smooth_field(id_rng, IDENTITY_SHAPE)[None], n, axis=0)
    for p in spec.phases:
        shape = shape + _envelope(ts, p)[:, None, None] * _smooth_field(rng, EXPRESSION_MISMATCH)[None]
    landmarks = _mesh_pixels(x, pose, scale, centre, shape, rng)
    bs = _blendshapes(x, cols, smile_bs, rng)
    occ = np.zeros(n, np.float32)
    reliable = np.ones((n, len(AU_CODES)), np.uint8)
    for o0, o1, region in spec.occlusions:
        rows = (ts >= o0) & (ts <= o1)
        occ[rows] = rng.uniform(0.6, 0.95)
        landmarks[rows] += rng.normal(0, 3 * LANDMARK_NOISE_PX, landmarks[rows].shape)
        for a in occlusion.REGION_AUS[region]:
            reliable[rows, AU_CODES.index(a)] = 0
    est = au_est.estimate(landmarks, bs, pose, ts, reliable, occ)  # as tools.pipeline does
    emo = emotion.fuse(_cnn_probs(spec, ts, rng), est.intensity, AU_CODES)
    lo, hi = landmarks[:, :, :2].min(1), landmarks[:, :, :2].max(1)
    return Track(
        track_id=spec.track_id, frame_index=np.arange(n), timestamps=ts.astype(np.float32),
        bbox=np.concatenate([lo, hi], 1).astype(np.float32),
        confidence=np.clip(rng.normal(0.93, 0.02, n), 0, 1).astype(np.float32) * (1 - 0.3 * occ),
        pose=pose, blendshapes=bs, aus=est.intensity, au_occurrence=est.occurrence,
        au_reliable=reliable, emotions=emo.probs, valence=emo.valence, arousal=emo.arousal,
        occlusion=occ,
    )


def make_clip(seed: int, clip_id: str | None = None, n_identities: int = 400,
              still_share: float = 0.08, second_face_share: float = 0.15,
              scenario: str | None = None, long_share: float = 0.0) -> tuple[Analysis, list[Example]]:
    """One synthetic clip (1-2 faces) and its labelled faces; deterministic in `seed`.

    long_share: the share of clips lasting 10-20 s instead of 3-9 s (real clips such as
    WolfgangLanger_Pexels.mp4 run 20 s, with many brief segments and ~60 AU events)."""
    rng = np.random.default_rng(seed)
    clip_id = clip_id or f"syn{seed:06d}"
    still = scenario is None and rng.random() < still_share
    fps = float(rng.choice([6.0, 8.0, 10.0]))
    long = long_share > 0 and rng.random() < long_share
    dur = 0.0 if still else float(rng.uniform(10.0, 20.0) if long else rng.uniform(3.0, 9.0))
    ts_all = np.zeros(1) if still else np.round(np.arange(0, dur + 1e-6, 1 / fps), 4)
    n_faces = 2 if (not still and scenario is None and rng.random() < second_face_share) else 1
    tracks, examples = [], []
    for f in range(n_faces):
        kind = scenario or str(rng.choice(list(SCENARIOS), p=np.array(list(SCENARIOS.values()))
                                          / sum(SCENARIOS.values())))
        identity = f"id{int(rng.integers(n_identities)):04d}"
        if still:
            start, end = 0.0, 0.0
            if kind in ("speech", "sequence"):
                kind = "single"
        else:
            start = 0.0 if f == 0 else float(np.round(rng.uniform(0, dur / 3), 1))
            end = dur if f == 0 else float(np.round(rng.uniform(2 * dur / 3, dur), 1))
        spec = scenario_spec(kind, rng, f + 1, identity, start if not still else -1.0,
                             end if not still else 1.0)
        ts = ts_all[(ts_all >= start - 1e-6) & (ts_all <= end + 1e-6)]
        if still:  # the photo is taken at the apex of the expression
            ts = np.zeros(1)
            for p in spec.phases:
                p.onset, p.apex, p.offset, p.release = -1.0, -0.5, 0.5, 1.0
        tracks.append(render_track(spec, ts, rng))
        examples.append(Example(
            id=f"{clip_id}_f{f + 1}", clip_id=clip_id, identity=identity, scenario=kind,
            confuser=kind in CONFUSERS, track_id=f + 1, label=spec.label, aus=spec.true_aus,
            segment_order=[spec.label] if still else spec.segment_order))
    name = f"{clip_id}.{'jpg' if still else 'mp4'}"
    analysis = Analysis(
        source=SourceInfo(name=name, kind="image" if still else "video", width=640, height=360,
                          duration_s=None if still else dur, native_fps=None if still else fps,
                          n_frames=len(ts_all), sha256=hashlib.sha256(name.encode()).hexdigest()),
        sampling=Sampling(target_fps=None if still else fps, frames_decoded=len(ts_all),
                          frames_analysed=len(ts_all), timestamps=ts_all.astype(np.float32)),
        tracks=tracks,
    )
    timeline.annotate(analysis)
    return analysis, examples


def generate(n_clips: int, seed: int = 0, **kwargs):
    """Yield (analysis, examples) for n_clips clips, seeds seed..seed+n_clips-1."""
    for i in range(n_clips):
        yield make_clip(seed * 1_000_003 + i, **kwargs)
