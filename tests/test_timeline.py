"""tools.timeline on crafted tracks whose segment and event boundaries are known."""

from __future__ import annotations

import numpy as np
import pytest

from tools.analysis import Analysis, Sampling, SourceInfo, Track
from tools.errors import FaceReasonError
from tools.facs import AU_CODES, EMOTIONS
from tools.summary import describe
from tools.timeline import (
    MICRO_S,
    OFF_INTENSITY,
    annotate,
    build_timeline,
    observed_spans,
    smooth,
)

FPS = 30.0
STEP = 1 / FPS
C, K = len(EMOTIONS), len(AU_CODES)
NEU, HAP, SUR, SAD = (EMOTIONS.index(x) for x in ("neutral", "happiness", "surprise", "sadness"))
AU12, AU05, AU04, AU09 = (AU_CODES.index(x) for x in ("AU12", "AU05", "AU04", "AU09"))


def make_track(t, emotions=None, aus=None, occlusion=None, valence=None, arousal=None,
               track_id=1) -> Track:
    t = np.asarray(t, np.float64)
    n = len(t)
    return Track(
        track_id=track_id, frame_index=np.arange(n), timestamps=t.astype(np.float32),
        bbox=np.tile([10.0, 10.0, 60.0, 60.0], (n, 1)), confidence=np.ones(n),
        pose=np.zeros((n, 3)), blendshapes=np.zeros((n, 52)),
        emotions=emotions, aus=aus,
        au_occurrence=None if aus is None else (aus >= 1.0).astype(np.float32),
        occlusion=occlusion, valence=valence, arousal=arousal,
    )


def emotion_matrix(t, spans, base=NEU, base_p=0.8):
    """Per-frame probabilities: `base` everywhere, label l with prob p on [a, b)."""
    E = np.full((len(t), C), (1 - base_p) / (C - 1))
    E[:, base] = base_p
    for a, b, lab, p in spans:
        m = (t >= a - 1e-9) & (t < b - 1e-9)
        E[m] = (1 - p) / (C - 1)
        E[m, lab] = p
    return E


def analysis_of(*tracks):
    return Analysis(source=SourceInfo(name="synthetic.mp4", kind="video", width=64, height=64),
                    sampling=Sampling(), tracks=list(tracks))


@pytest.fixture
def six_seconds():
    """Neutral, a 2.5 s smile with AU12, a 0.3 s surprise burst with AU05, noise."""
    rng = np.random.default_rng(0)
    t = np.arange(0, 6, STEP)
    E = emotion_matrix(t, [(2.0, 4.5, HAP, 0.9), (5.0, 5.3, SUR, 0.8),
                           # 0.2 s of weak sadness: flicker, not an expression
                           (1.0, 1.2, SAD, 0.45)])
    E[np.arange(30, 180, 17), SUR] = 0.95  # isolated one-frame spikes
    E += rng.uniform(0, 0.02, E.shape)
    E /= E.sum(1, keepdims=True)
    A = rng.uniform(0, 0.2, (len(t), K))
    A[:, AU12] += np.clip(3.8 - np.abs(t - 3.3) * 3, 0, None)  # tent: crosses 0.5 at 2.2/4.4 s
    A[(t >= 5.0 - 1e-9) & (t < 5.3 - 1e-9), AU05] = 2.0
    A[(t >= 0.5) & (t < 1.5), AU04] = 0.8  # between OFF and ON: never an event
    A[90, AU09] = 3.0  # a one-frame spike: noise
    return t, E, A


def test_segments_events_and_micro_bursts(six_seconds):
    t, E, A = six_seconds
    segs, events, summary = build_timeline(make_track(t, E, A), EMOTIONS, AU_CODES)
    assert [s.label for s in segs] == ["neutral", "happiness", "neutral", "surprise", "neutral"]
    # Boundaries where the data changes, to within a frame: smoothing adds no lag.
    for seg, (a, b) in zip(segs, [(0, 2.0), (2.0, 4.5), (4.5, 5.0), (5.0, 5.3), (5.3, 6.0)],
                           strict=True):
        assert abs(seg.start - a) <= STEP + 1e-3 and abs(seg.end - b) <= STEP + 1e-3
    # Segments tile the observed time.
    assert all(abs(x.end - y.start) < 1e-6 for x, y in zip(segs, segs[1:], strict=False))
    assert [s.micro for s in segs] == [False, False, False, True, False]
    hap = segs[1]
    raw = E[(t >= 2.0 - 1e-9) & (t < 4.5 - 1e-9), HAP]
    # Spikes are smoothed away, so the mean is that of the typical frame.
    assert hap.mean_prob == pytest.approx(np.median(raw), abs=0.01) and hap.mean_prob > raw.mean()
    assert hap.mean_prob <= hap.peak_prob <= raw.max() + 1e-4
    assert hap.start <= hap.peak_time < hap.end

    by_au = {e.au: e for e in events}
    assert set(by_au) == {"AU12", "AU05"}  # AU04 stays below ON, the AU09 spike is noise
    e12 = by_au["AU12"]
    onset_true = 3.3 - (3.8 - OFF_INTENSITY) / 3  # where the tent crosses OFF_INTENSITY
    # The added noise (< 0.2) moves the crossings by up to 0.2 / 3 s: two frames.
    assert abs(e12.onset - onset_true) <= 3 * STEP
    assert abs(e12.offset - (3.3 + (3.8 - OFF_INTENSITY) / 3)) <= 3 * STEP
    assert abs(e12.apex - 3.3) <= 2 * STEP and 3.4 < e12.peak_intensity <= 4.0
    assert not e12.micro and e12.name == "lip corner puller"
    e05 = by_au["AU05"]
    assert e05.micro and abs(e05.onset - 5.0) <= STEP + 1e-3 and e05.offset - e05.onset < MICRO_S

    assert summary.dominant_emotion == "neutral"
    neutral_time = sum(s.end - s.start for s in segs if s.label == "neutral")
    assert summary.dominant_share == pytest.approx(neutral_time / 6.0, abs=1e-3)
    assert summary.strongest_aus[0][0] == "AU12"


def test_smoothing_keeps_steps_in_place_and_removes_spikes():
    t = np.arange(0, 2, STEP)
    x = (t >= 1.0).astype(float)
    x[10] = 5.0
    y = smooth(x, t)
    assert np.flatnonzero(np.diff(y))[0] + 1 == np.flatnonzero(t >= 1.0)[0]
    assert y[10] == 0.0
    # A too-short series or wide sampling is returned as is.
    np.testing.assert_array_equal(smooth(x[:2], t[:2]), x[:2].astype(np.float32))


def test_gaps_split_segments_and_events_and_weight_the_summary():
    # Seen 0-2 s, gone, seen again 4-5 s, at a jittered ~30 fps.
    rng = np.random.default_rng(1)
    t = np.concatenate([np.arange(0, 2, STEP), np.arange(4, 5, STEP)])
    t = t + rng.uniform(-0.004, 0.004, len(t))
    t[0] = 0.0
    E = emotion_matrix(t, [(0, 10, HAP, 0.9)])
    A = np.zeros((len(t), K))
    A[:, AU12] = 2.5
    A[(t > 1.6) & (t < 2.1), AU05] = 1.5  # ends with the first stretch: its end is unseen
    val = np.where(t < 3, 1.0, -1.0)
    occ = np.where(t < 1.5, 1.0, 0.0)
    track = make_track(t, E, A, occlusion=occ, valence=val, arousal=np.zeros(len(t)))
    segs, events, summary = build_timeline(track, EMOTIONS, AU_CODES)

    assert [s.label for s in segs] == ["happiness", "happiness"]
    assert segs[0].end == pytest.approx(2.0, abs=0.01) and segs[1].start == pytest.approx(4.0, abs=0.01)
    assert [e.au for e in events] == ["AU12", "AU05", "AU12"]
    assert not any(e.micro for e in events)  # AU05's offset was not observed
    assert events[0].offset <= 2.01 and events[2].onset >= 3.99
    spans = observed_spans(t)
    assert len(spans) == 2 and spans[0][1] < spans[1][0]
    # Duration-weighted: 2 s at +1, 1 s at -1; covered for 1.5 s of 3 s.
    assert summary.mean_valence == pytest.approx(1 / 3, abs=0.02)
    assert summary.occluded_share == pytest.approx(0.5, abs=0.02)
    assert summary.dominant_emotion == "happiness" and summary.dominant_share == 1.0
    text = describe(analysis_of(track))
    assert "face not visible" in text and "2.0-4.0 s" in text


def test_burst_at_the_start_is_not_called_micro():
    t = np.arange(0, 3, STEP)
    E = emotion_matrix(t, [(0, 0.3, SUR, 0.9)])
    segs, _, _ = build_timeline(make_track(t, E), EMOTIONS, AU_CODES)
    assert [s.label for s in segs] == ["surprise", "neutral"] and not segs[0].micro


def test_flicker_joins_the_best_fitting_neighbour():
    t = np.arange(0, 3, STEP)
    # Happiness, then 0.2 s where sadness barely wins over anger, then anger.
    E = emotion_matrix(t, [(0, 1.0, HAP, 0.7), (1.0, 3.0, EMOTIONS.index("anger"), 0.7)])
    m = (t >= 1.0) & (t < 1.2)
    E[m] = 0.05
    E[m, SAD] = 0.4
    E[m, EMOTIONS.index("anger")] = 0.35
    segs, _, _ = build_timeline(make_track(t, E), EMOTIONS, AU_CODES)
    assert [s.label for s in segs] == ["happiness", "anger"]
    assert segs[1].start == pytest.approx(1.0, abs=1e-3)


def test_still_image():
    E = emotion_matrix(np.zeros(1), [(0, 1, HAP, 0.85)])
    A = np.zeros((1, K))
    A[0, AU12] = 3.0
    track = make_track([0.0], E, A, valence=np.array([0.6]))
    segs, events, summary = build_timeline(track, EMOTIONS, AU_CODES)
    assert len(segs) == 1 and segs[0].label == "happiness" and not segs[0].micro
    assert segs[0].start == segs[0].end == 0.0 and segs[0].peak_prob == pytest.approx(0.85, abs=1e-3)
    assert [(e.au, e.onset, e.apex, e.offset, e.micro) for e in events] == [("AU12", 0, 0, 0, False)]
    assert summary.dominant_share == 1.0 and summary.mean_valence == pytest.approx(0.6)
    text = describe(analysis_of(track))
    assert text.startswith("Face 1 (still image), happiness (p=0.85)") and "AU12" in text


def test_describe_uses_the_annotated_timeline(six_seconds):
    t, E, A = six_seconds
    an = annotate(analysis_of(make_track(t, E, A, valence=np.full(len(t), 0.3))))
    tr = an.tracks[0]
    assert tr.summary is not None and tr.segments and tr.events
    lines = describe(an).splitlines()
    assert lines[0].startswith("Face 1, 0.0-2.0 s: neutral; 2.0-4.5 s: happiness (peak")
    assert "5.0-5.3 s: surprise" in lines[0] and "micro-expression" in lines[0]
    e12 = tr.events[0]
    assert e12.au == "AU12" and lines[1].startswith(
        f"  AUs: AU12 lip corner puller {e12.onset:.1f}-{e12.offset:.1f} s "
        f"(apex {e12.apex:.1f} s, {e12.peak_intensity:.1f}/5); AU05 upper lid raiser")
    assert "valence +0.30" in lines[2]
    assert describe(Analysis(source=an.source, sampling=Sampling())) == "No face found."


def test_missing_series_and_bad_shapes():
    t = np.arange(0, 1, STEP)
    segs, events, summary = build_timeline(make_track(t), EMOTIONS, AU_CODES)
    assert segs == [] and events == [] and summary.dominant_emotion == "unknown"
    with pytest.raises(FaceReasonError, match=r"aus has shape \(30, 3\)"):
        build_timeline(make_track(t, aus=np.zeros((30, 3))), EMOTIONS, AU_CODES)
    with pytest.raises(FaceReasonError, match="non-decreasing"):
        build_timeline(make_track(t[::-1]), EMOTIONS, AU_CODES)


def test_user_label_set_without_neutral():
    labels = ["calm", "excited"]
    t = np.arange(0, 2, STEP)
    E = np.zeros((len(t), 2))
    E[:, 0] = np.where(t < 1, 0.8, 0.2)
    E[:, 1] = 1 - E[:, 0]
    segs, _, summary = build_timeline(make_track(t, E), labels, AU_CODES)
    assert [(s.label, s.start) for s in segs] == [("calm", 0.0), ("excited", pytest.approx(1.0, abs=1e-3))]
    assert summary.dominant_share == pytest.approx(0.5, abs=0.02)


def test_blinks_and_unclear_brief_segments_are_not_micro():
    t = np.arange(0, 3, STEP)
    # 0.3 s where sadness only just wins (p=0.4): a short segment, not a clear display.
    E = emotion_matrix(t, [(1.0, 1.3, SAD, 0.4)], base_p=0.8)
    m = (t >= 1.0 - 1e-9) & (t < 1.3 - 1e-9)
    E[m, NEU] = 0.35
    A = np.zeros((len(t), K))
    A[(t >= 2.0 - 1e-9) & (t < 2.2 - 1e-9), AU_CODES.index("AU45")] = 3.0  # a blink
    A[(t >= 2.0 - 1e-9) & (t < 2.2 - 1e-9), AU04] = 3.0  # the same burst on the brow: micro
    segs, events, _ = build_timeline(make_track(t, E, A), EMOTIONS, AU_CODES)
    assert [(s.label, s.micro) for s in segs] == [("neutral", False), ("sadness", False),
                                                  ("neutral", False)]
    assert {e.au: e.micro for e in events} == {"AU45": False, "AU04": True}
