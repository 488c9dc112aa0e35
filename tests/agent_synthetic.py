"""Realistic `Analysis` objects built directly, for agent tests that must not wait on
perception: face 0 goes neutral -> happiness (AU06 + AU12 rise, a blink, a hand
over the face for half a second); face 1 appears later and looks surprised
(AU01, AU02, AU05, AU26).

The series are generated from the same event list that is stored in the
Analysis, so segments, events and per-frame values agree as they do in the
real pipeline.
"""

from __future__ import annotations

import numpy as np

from tools.analysis import (
    Analysis,
    AUEvent,
    ContextResult,
    EmotionSegment,
    Sampling,
    SourceInfo,
    Track,
    TrackSummary,
)
from tools.facs import AU_CODES, AU_NAMES, BLENDSHAPE_NAMES, EMOTIONS

FPS = 8.0


def _bump(ts: np.ndarray, onset: float, apex: float, offset: float, peak: float) -> np.ndarray:
    up = np.clip((ts - onset) / max(apex - onset, 1e-3), 0, 1)
    down = np.clip((offset - ts) / max(offset - apex, 1e-3), 0, 1)
    return peak * np.where(ts <= apex, up, down) * ((ts >= onset) & (ts <= offset))


def make_track(track_id: int, start: float, end: float, events: list[tuple[str, float, float, float, float]],
               segments: list[tuple[str, float, float, float]], occluded: tuple[float, float] | None = None,
               ) -> Track:
    ts = np.round(np.arange(start, end + 1e-6, 1 / FPS), 4)
    n = len(ts)
    aus = np.zeros((n, len(AU_CODES)), np.float32)
    ev_models = []
    for au, onset, apex, offset, peak in events:
        k = AU_CODES.index(au)
        aus[:, k] = np.maximum(aus[:, k], _bump(ts, onset, apex, offset, peak))
        ev_models.append(AUEvent(au=au, name=AU_NAMES[au], onset=onset, apex=apex, offset=offset,
                                 peak_intensity=peak, micro=offset - onset < 0.5))
    emo = np.full((n, len(EMOTIONS)), 0.02, np.float32)
    seg_models = []
    for label, s0, s1, p in segments:
        rows = (ts >= s0) & (ts <= s1)
        emo[rows, EMOTIONS.index(label)] = p
        peak_i = int(np.flatnonzero(rows)[len(np.flatnonzero(rows)) // 2])
        seg_models.append(EmotionSegment(label=label, start=s0, end=s1, peak_time=float(ts[peak_i]),
                                         mean_prob=p, peak_prob=min(p + 0.05, 1.0),
                                         micro=s1 - s0 < 0.5))
    emo /= emo.sum(axis=1, keepdims=True)
    occ = np.zeros(n, np.float32)
    reliable = np.ones_like(aus)
    if occluded:
        rows = (ts >= occluded[0]) & (ts <= occluded[1])
        occ[rows] = 0.8
        reliable[rows] = 0.0
    hap = emo[:, EMOTIONS.index("happiness")]
    sur = emo[:, EMOTIONS.index("surprise")]
    valence = np.clip(hap - emo[:, EMOTIONS.index("sadness")], -1, 1).astype(np.float32)
    arousal = np.clip(0.6 * sur + 0.3 * hap - 0.1, -1, 1).astype(np.float32)
    dom = max({s[0] for s in segments}, key=lambda lab: sum(s[2] - s[1] for s in segments if s[0] == lab))
    peaks = aus.max(axis=0)
    strongest = [(AU_CODES[i], float(peaks[i])) for i in np.argsort(-peaks)[:3] if peaks[i] > 0]
    return Track(
        track_id=track_id, frame_index=np.arange(n), timestamps=ts.astype(np.float32),
        bbox=np.tile(np.array([100, 80, 260, 260], np.float32), (n, 1)),
        confidence=np.full(n, 0.95, np.float32), pose=np.zeros((n, 3), np.float32),
        blendshapes=np.zeros((n, len(BLENDSHAPE_NAMES)), np.float32),
        aus=aus, au_occurrence=(aus >= 1.0).astype(np.float32), au_reliable=reliable,
        emotions=emo, valence=valence, arousal=arousal, occlusion=occ,
        segments=seg_models, events=ev_models,
        summary=TrackSummary(dominant_emotion=dom, dominant_share=0.5, strongest_aus=strongest,
                             mean_valence=float(valence.mean()), mean_arousal=float(arousal.mean()),
                             occluded_share=float((occ >= 0.5).mean())),
    )


def smiling_face(track_id: int = 0) -> Track:
    return make_track(
        track_id, 0.0, 6.0,
        events=[("AU12", 2.0, 3.0, 5.5, 3.2), ("AU06", 2.2, 3.1, 5.2, 2.1), ("AU45", 0.9, 1.0, 1.2, 1.5)],
        segments=[("neutral", 0.0, 1.9, 0.7), ("happiness", 2.0, 6.0, 0.85)],
        occluded=(4.0, 4.5),
    )


def surprised_face(track_id: int = 1) -> Track:
    return make_track(
        track_id, 1.0, 5.0,
        events=[("AU01", 2.0, 2.5, 4.0, 2.4), ("AU02", 2.0, 2.5, 4.0, 2.6), ("AU05", 2.1, 2.5, 3.5, 1.8),
                ("AU26", 2.2, 2.6, 3.8, 2.9)],
        segments=[("neutral", 1.0, 1.9, 0.6), ("surprise", 2.0, 4.0, 0.8), ("neutral", 4.1, 5.0, 0.55)],
    )


def make_analysis(faces: int = 2, name: str = "synthetic.mp4", context: bool = False) -> Analysis:
    tracks = [smiling_face(0), surprised_face(1)][:faces]
    ts = np.round(np.arange(0, 6.0 + 1e-6, 1 / FPS), 4)
    ctx = ContextResult()
    if context:
        ctx = ContextResult(status="ok", model="ViT-B-32 (test)", scene={"a party": 0.61, "an office": 0.22},
                            face={"a smiling person": 0.7})
    return Analysis(
        source=SourceInfo(name=name, kind="video", width=640, height=360, duration_s=6.0,
                          native_fps=FPS, n_frames=len(ts)),
        sampling=Sampling(target_fps=FPS, frames_decoded=len(ts), frames_analysed=len(ts), timestamps=ts),
        tracks=tracks, context=ctx,
    )


def no_face_analysis() -> Analysis:
    return Analysis(source=SourceInfo(name="no_face.mp4", kind="video", width=640, height=360,
                                      duration_s=3.0), sampling=Sampling(), tracks=[])
