"""Timeline of one face: smoothed series, emotion segments, AU events, summary.

Input: a Track whose per-frame measurements (aus, au_occurrence, emotions,
valence, arousal, occlusion) are filled. Output: what a person would write
down watching the clip: "neutral until 3.2 s, then happiness peaking at
5.1 s; AU12 from 3.4 to 7.6 s, apex at 5.0 s", plus a per-track summary.

The rules, with their sources, are in docs/timeline.md. In short:
- Time is split into *chunks* where the face was continuously observed; a
  gap (the face left, or was not detected) ends every segment and event.
- Series are smoothed with a centred running median (zero phase: a step
  stays where it is, so onsets are not delayed; isolated one-frame spikes go).
- Emotion segments are runs of the smoothed arg-max label; a run shorter than
  MIN_SEGMENT_S is flicker and joins the neighbour that fits its frames best,
  unless it is a confident non-neutral display (kept, and flagged `micro`).
- AU events are hysteresis regions: the smoothed intensity enters at the
  occurrence level (FACS "A", 1.0) and leaves below OFF_INTENSITY.
- Anything shorter than MICRO_S = 0.5 s whose start and end were both seen
  is flagged `micro=True`: a possible micro-expression (emotion segments also
  need a confident peak; blinks, AU45, never count).
Everything is vectorised over frames and AUs (a 500-frame track takes a few ms).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from tools.analysis import Analysis, AUEvent, EmotionSegment, Track, TrackSummary
from tools.errors import FaceReasonError
from tools.facs import AU_NAMES, AU_OCCURRENCE_THRESHOLD, NEUTRAL
from tools.occlusion import FLAG

SMOOTH_WINDOW_S = 0.15  # running-median width: ~5 frames at 30 fps, shorter than any micro-expression
GAP_FACTOR = 3.0  # a step > GAP_FACTOR x the typical frame step ...
GAP_MIN_S = 0.2  # ... and > 0.2 s means the face was not observed in between
MIN_SEGMENT_S = 0.25  # emotion runs shorter than this are flicker unless confident
KEEP_BRIEF_PROB = 0.5  # a brief non-neutral run peaking at or above this is kept
ON_INTENSITY = AU_OCCURRENCE_THRESHOLD  # FACS trace level "A" (1.0 on the 0-5 scale)
OFF_INTENSITY = 0.5  # hysteresis: an AU event lasts until intensity drops below this
MICRO_S = 0.5  # Matsumoto & Hwang (2011); Yan et al. (2013): micro-expressions last < 0.5 s
# Blinks are brief by nature (about 0.1-0.4 s) and are not expressions: never "micro".
NOT_MICRO_AUS = frozenset({"AU45"})
OCCLUDED = FLAG  # occlusion score at or above which a frame counts as covered (tools.occlusion owns it)
TOP_AUS = 5


# --------------------------------------------------------------------- time
def _frame_steps(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(chunk id per frame, duration each frame stands for, typical frame step).

    A frame lasts until the next one, except at the end of a chunk, where it
    lasts one typical step. A still image has one frame of duration 0.
    """
    n = len(t)
    if n < 2:
        return np.zeros(n, np.int64), np.zeros(n), 0.0
    dt = np.diff(t.astype(np.float64))
    pos = dt[dt > 0]
    step = float(np.median(pos)) if pos.size else 0.0
    gap = dt > max(GAP_FACTOR * step, GAP_MIN_S)
    chunk = np.concatenate([[0], np.cumsum(gap)])
    dur = np.append(np.where(gap, step, dt), step)
    return chunk, dur, step


def _chunk_bounds(chunk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last frame index of each chunk."""
    starts = np.flatnonzero(np.diff(chunk, prepend=-1))
    ends = np.append(starts[1:] - 1, len(chunk) - 1)
    return starts, ends


def smooth(values: np.ndarray, timestamps: np.ndarray, window_s: float = SMOOTH_WINDOW_S) -> np.ndarray:
    """Centred running median over time, per observed chunk; same shape as `values`.

    Zero phase: a step in the input stays at the same frame in the output (no
    lag at onsets), unlike an exponential or causal average. Chunks separated
    by a gap are filtered independently.
    """
    v = np.nan_to_num(np.asarray(values, np.float64))
    t = np.asarray(timestamps, np.float64)
    if len(t) < 3 or v.size == 0:
        return v.astype(np.float32)
    chunk, _, step = _frame_steps(t)
    width = int(round(window_s / step)) if step > 0 else 1
    width += 1 - width % 2  # odd, so the window is centred
    if width < 3:
        return v.astype(np.float32)
    out = np.empty_like(v)
    size = (width,) + (1,) * (v.ndim - 1)
    for s, e in zip(*_chunk_bounds(chunk), strict=True):
        out[s:e + 1] = ndimage.median_filter(v[s:e + 1], size=size, mode="nearest")
    return out.astype(np.float32)


# ----------------------------------------------------------------- segments
def _runs(labels: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """(R, 2) [first, last] frame indices of runs of equal label within a chunk."""
    n = len(labels)
    change = np.ones(n, bool)
    change[1:] = (labels[1:] != labels[:-1]) | (chunk[1:] != chunk[:-1])
    starts = np.flatnonzero(change)
    return np.stack([starts, np.append(starts[1:] - 1, n - 1)], axis=1)


def _first_argmax(vals: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Index of the first maximum of each contiguous group of `vals` (groups begin at `starts`)."""
    peak = np.maximum.reduceat(vals, starts)
    gid = np.cumsum(np.isin(np.arange(len(vals)), starts)) - 1
    pos = np.where(vals == peak[gid], np.arange(len(vals)), len(vals))
    return np.minimum.reduceat(pos, starts)


def _merge_flicker(lab: np.ndarray, P: np.ndarray, chunk: np.ndarray, cum: np.ndarray,
                   neutral: int | None) -> np.ndarray:
    """Relabel frames of brief, unconfident runs to the neighbour that fits them best.

    "Fits best": the neighbour label with the larger summed probability over
    the brief run's frames. Each pass relabels every brief run that is shorter
    than its brief neighbours (so two neighbours never swap labels), shortest
    first in effect; a handful of passes suffice. Returns the new labels.
    """
    lab = lab.copy()
    n = len(lab)
    cumP = np.vstack([np.zeros((1, P.shape[1])), np.cumsum(P, axis=0)])
    while True:
        runs = _runs(lab, chunk)
        s, e = runs[:, 0], runs[:, 1]
        r = len(runs)
        dur = cum[e + 1] - cum[s]
        rl = lab[s]
        peak = np.maximum.reduceat(P[np.arange(n), lab], s)
        confident = peak >= KEEP_BRIEF_PROB
        if neutral is not None:
            confident &= rl != neutral
        has_prev = np.r_[False, chunk[s[1:]] == chunk[e[:-1]]]
        has_next = np.r_[chunk[e[:-1]] == chunk[s[1:]], False]
        short = (dur < MIN_SEGMENT_S) & ~confident & (has_prev | has_next)
        if not short.any():
            return lab
        key = np.where(short, dur + 1e-9 * np.arange(r), np.inf)  # unique: ties go to the earlier
        pick = short & (key < np.r_[np.inf, key[:-1]]) & (key < np.r_[key[1:], np.inf])
        prev_lab = np.r_[0, rl[:-1]]
        next_lab = np.r_[rl[1:], 0]
        fit_prev = np.where(has_prev, cumP[e + 1, prev_lab] - cumP[s, prev_lab], -np.inf)
        fit_next = np.where(has_next, cumP[e + 1, next_lab] - cumP[s, next_lab], -np.inf)
        new = np.where(fit_next > fit_prev, next_lab, prev_lab)
        rid = np.repeat(np.arange(r), e - s + 1)
        lab = np.where(pick[rid], new[rid], lab)


def _segments(P: np.ndarray, labels: list[str], t: np.ndarray, chunk: np.ndarray,
              dur: np.ndarray) -> list[EmotionSegment]:
    n = len(t)
    cum = np.concatenate([[0.0], np.cumsum(dur)])
    neutral = labels.index(NEUTRAL) if NEUTRAL in labels else None
    lab = _merge_flicker(P.argmax(axis=1), P, chunk, cum, neutral)
    runs = _runs(lab, chunk)
    s, e = runs[:, 0], runs[:, 1]
    own = P[np.arange(n), lab]  # probability of the frame's segment label
    mean = np.add.reduceat(own, s) / (e - s + 1)
    peak_idx = _first_argmax(own, s)
    starts, ends = _chunk_bounds(chunk)
    bounded = (s > starts[chunk[s]]) & (e < ends[chunk[e]])  # onset and offset both seen
    length = cum[e + 1] - cum[s]
    # A micro-expression is a brief but clear display: short, both ends seen,
    # confident (a short winner of an ambiguous mix is just a short segment).
    micro = bounded & (length < MICRO_S) & (n > 1) & (own[peak_idx] >= KEEP_BRIEF_PROB)
    if neutral is not None:
        micro &= lab[s] != neutral
    return [
        EmotionSegment(label=labels[lab[a]], start=round(float(t[a]), 3),
                       end=round(float(t[a] + (cum[b + 1] - cum[a])), 3),
                       peak_time=round(float(t[p]), 3), mean_prob=round(float(m), 4),
                       peak_prob=round(float(own[p]), 4), micro=bool(mi))
        for a, b, p, m, mi in zip(s, e, peak_idx, mean, micro, strict=True)
    ]


# ------------------------------------------------------------------- events
def _events(S: np.ndarray, occ: np.ndarray | None, reliable: np.ndarray | None,
            codes: list[str], t: np.ndarray, chunk: np.ndarray, dur: np.ndarray) -> list[AUEvent]:
    """Hysteresis regions of every AU at once.

    Works on the (AU, time) matrix flattened AU by AU, so each region is one
    contiguous stretch of cells and every statistic is one numpy reduction.
    """
    n, k = S.shape
    high = S >= ON_INTENSITY
    if occ is not None:
        high &= occ > 0.5
    if reliable is not None:
        high &= reliable > 0.5  # an occluded region cannot start an event
    low = ((S >= OFF_INTENSITY) | high).T  # (k, n)
    new_chunk = np.r_[True, chunk[1:] != chunk[:-1]]
    prev = np.zeros_like(low)
    prev[:, 1:] = low[:, :-1]
    begins = (low & (new_chunk[None, :] | ~prev)).ravel()
    cells = np.flatnonzero(low.ravel())
    if cells.size == 0:
        return []
    g0 = np.flatnonzero(begins[cells])  # where each region starts, in `cells`
    rows, cols = cells % n, cells // n
    has_high = np.maximum.reduceat(high.T.ravel()[cells], g0).astype(bool)
    vals = S.T.ravel()[cells]
    apex = rows[_first_argmax(vals, g0)]
    first = rows[g0]
    last = rows[np.r_[g0[1:], len(cells)] - 1]
    col = cols[g0]
    peak = np.maximum.reduceat(vals, g0)
    cum = np.concatenate([[0.0], np.cumsum(dur)])
    length = cum[last + 1] - cum[first]
    starts, ends = _chunk_bounds(chunk)
    bounded = (first > starts[chunk[first]]) & (last < ends[chunk[last]])
    micro = bounded & (length < MICRO_S) & (n > 1)
    micro &= ~np.isin(np.asarray(codes, dtype=object)[col], list(NOT_MICRO_AUS))
    keep = np.flatnonzero(has_high)
    order = keep[np.lexsort((col[keep], first[keep]))]
    return [
        AUEvent(au=codes[col[i]], name=AU_NAMES.get(codes[col[i]], codes[col[i]]),
                onset=round(float(t[first[i]]), 3),
                apex=round(float(t[apex[i]]), 3),
                offset=round(float(t[first[i]] + length[i]), 3),
                peak_intensity=round(float(peak[i]), 3), micro=bool(micro[i]))
        for i in order
    ]


# ------------------------------------------------------------------ summary
def _weighted_mean(x: np.ndarray | None, w: np.ndarray) -> float:
    if x is None or len(x) == 0:
        return 0.0
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x)
    return float((x[ok] * w[ok]).sum() / w[ok].sum()) if ok.any() and w[ok].sum() > 0 else 0.0


def _summary(segments: list[EmotionSegment], events: list[AUEvent], track: Track,
             w: np.ndarray) -> TrackSummary:
    if segments:
        share: dict[str, float] = {}
        for s in segments:
            share[s.label] = share.get(s.label, 0.0) + (s.end - s.start)
        total = sum(share.values())
        if total > 0:
            dominant = max(share, key=share.__getitem__)
            dom_share = share[dominant] / total
        else:  # a still: one segment of no duration
            dominant, dom_share = segments[0].label, 1.0
    else:
        dominant, dom_share = "unknown", 0.0
    peaks: dict[str, float] = {}
    for ev in events:
        peaks[ev.au] = max(peaks.get(ev.au, 0.0), ev.peak_intensity)
    strongest = sorted(peaks.items(), key=lambda kv: -kv[1])[:TOP_AUS]
    return TrackSummary(
        dominant_emotion=dominant, dominant_share=round(dom_share, 4),
        strongest_aus=[(a, round(v, 3)) for a, v in strongest],
        mean_valence=round(_weighted_mean(track.valence, w), 4),
        mean_arousal=round(_weighted_mean(track.arousal, w), 4),
        occluded_share=round(_occluded_share(track, w), 4),
    )


def _occluded_share(track: Track, w: np.ndarray) -> float:
    occluded = None if track.occlusion is None else (np.asarray(track.occlusion) >= OCCLUDED)
    return _weighted_mean(occluded, w)


def occluded_share(track: Track) -> float:
    """Share of the track's time (each frame lasting until the next) with the face covered:
    the summary's number, for a track that has no summary yet."""
    if track.summary is not None:
        return float(track.summary.occluded_share)
    if not track.n:
        return 0.0
    return round(_occluded_share(track, frame_durations(np.asarray(track.timestamps, np.float64))), 4)


# --------------------------------------------------------------------- API
def _check(track: Track, emotion_labels: list[str], au_codes: list[str]) -> None:
    n = track.n
    t = np.asarray(track.timestamps, np.float64)
    if n and (not np.isfinite(t).all() or (np.diff(t) < 0).any()):
        raise FaceReasonError(f"track {track.track_id}: timestamps must be finite and non-decreasing")
    expect = {"aus": (n, len(au_codes)), "au_occurrence": (n, len(au_codes)),
              "au_reliable": (n, len(au_codes)), "emotions": (n, len(emotion_labels)),
              "valence": (n,), "arousal": (n,), "occlusion": (n,)}
    for name, shape in expect.items():
        a = getattr(track, name)
        if a is not None and np.shape(a) != shape:
            raise FaceReasonError(
                f"track {track.track_id}: {name} has shape {np.shape(a)}, expected {shape} "
                f"({n} frames, {len(au_codes)} AU codes, {len(emotion_labels)} emotion labels)"
            )


def build_timeline(
    track: Track, emotion_labels: list[str], au_codes: list[str]
) -> tuple[list[EmotionSegment], list[AUEvent], TrackSummary]:
    """Emotion segments, AU events and a summary for one track (see the module doc)."""
    _check(track, emotion_labels, au_codes)
    t = np.asarray(track.timestamps, np.float64)
    if len(t) == 0:
        return [], [], TrackSummary(dominant_emotion="unknown", dominant_share=0.0)
    chunk, dur, _ = _frame_steps(t)
    w = dur if dur.sum() > 0 else np.ones(len(t))
    segments: list[EmotionSegment] = []
    if track.emotions is not None and len(emotion_labels):
        segments = _segments(smooth(track.emotions, t).astype(np.float64), emotion_labels, t,
                             chunk, dur)
    events: list[AUEvent] = []
    if track.aus is not None and len(au_codes):
        occ = None if track.au_occurrence is None else smooth(track.au_occurrence, t)
        events = _events(smooth(track.aus, t), occ,
                         None if track.au_reliable is None else np.asarray(track.au_reliable),
                         au_codes, t, chunk, dur)
    return segments, events, _summary(segments, events, track, w)


def annotate(analysis: Analysis) -> Analysis:
    """Fill segments, events and summary of every track in place; returns the analysis."""
    for tr in analysis.tracks:
        tr.segments, tr.events, tr.summary = build_timeline(
            tr, analysis.emotion_labels, analysis.au_codes)
    return analysis


def frame_durations(timestamps: np.ndarray) -> np.ndarray:
    """Seconds each frame stands for: until the next frame, or one typical step before a gap."""
    return _frame_steps(np.asarray(timestamps, np.float64))[1]


def occluded_spans(track: Track) -> list[tuple[float, float]]:
    """(start, end) seconds of each run of frames whose occlusion score is at least OCCLUDED,
    each frame lasting until the next (frame_durations), as the summary's share counts them."""
    if track.occlusion is None or not track.n:
        return []
    t = np.asarray(track.timestamps, np.float64)
    occ = (np.asarray(track.occlusion, np.float64) >= OCCLUDED).astype(int)
    end = t + frame_durations(t)
    change = np.flatnonzero(np.diff(np.r_[0, occ, 0]))
    return [(float(t[a]), float(end[b - 1])) for a, b in zip(change[::2], change[1::2], strict=True)]


def observed_spans(timestamps: np.ndarray) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch in which the face was continuously seen."""
    t = np.asarray(timestamps, np.float64)
    if len(t) == 0:
        return []
    chunk, dur, _ = _frame_steps(t)
    starts, ends = _chunk_bounds(chunk)
    return [(float(t[a]), float(t[b] + dur[b])) for a, b in zip(starts, ends, strict=True)]
