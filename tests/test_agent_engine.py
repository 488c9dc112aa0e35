"""The Exp-CoT engine: a rule-based decision, rendered like a model's, faithful, caption in order."""

from __future__ import annotations

import numpy as np
import pytest
from agent_synthetic import make_analysis, no_face_analysis

from agent import engine, faithfulness
from agent import evidence as ev
from agent.schema import HEADERS, parse_explanation
from finetune.rewards import caption_emotions
from finetune.rewards import collapse as _collapse

REAL = ["single_face.mp4", "WolfgangLanger_Pexels.mp4"]


def test_synthetic_two_faces():
    a = make_analysis(faces=2)
    d0, d1 = (engine.decide(a, t) for t in a.tracks)
    f0 = ev.facts(a, a.track(0))
    assert d0.label == "happiness" and d0.arc == ["neutral1", "happiness1"]
    assert {f0.events[i].au for i in d0.cite} == {"AU06", "AU12"}  # happiness's own AUs, not the blink
    assert d1.label == "surprise" and d1.arc == ["neutral2", "surprise1", "neutral1"]
    for e in engine.explain(a):
        assert faithfulness.check(e, a) == [] and e.decided_by == "engine" and not e.fallback_used
        for h in HEADERS:
            assert h in e.to_text()
        assert parse_explanation(e.to_text()).conclusion.label == e.conclusion.label


def test_deterministic():
    a = make_analysis(faces=1)
    assert engine.explain_track(a, a.tracks[0], seed=3) == engine.explain_track(a, a.tracks[0], seed=3)


def test_custom_label_set_and_missing_timeline():
    # Labels from a user-defined set, no segments or events from timeline: the
    # engine falls back on the series and still only uses that label set.
    a = make_analysis(faces=1)
    t = a.tracks[0]
    probs = np.zeros((t.n, 3), np.float32)
    probs[:, 0], probs[:, 1], probs[:, 2] = 0.2, 0.7, 0.1
    a.emotion_labels = ["calm", "joy", "other"]
    a.tracks[0] = t.model_copy(update={"emotions": probs, "segments": [], "events": []})
    (e,) = engine.explain(a)
    assert e.conclusion.label == "joy"
    assert {o.au for o in e.key_observations} >= {"AU12", "AU06"}  # from the occurrence series
    assert faithfulness.check(e, a) == []


def test_no_face_gives_no_explanations():
    assert engine.explain(no_face_analysis()) == []


@pytest.mark.slow
@pytest.mark.parametrize("name", REAL)
def test_real_media(analyses, name):
    a = analyses(name, fps=8)
    assert a.tracks, f"perception found no face in {name}"
    for e in engine.explain(a, seed=0):
        assert faithfulness.check(e, a) == []
        t = a.track(e.track_id)
        d = engine.decide(a, t)
        f = ev.facts(a, t)
        # The caption tells the arc's emotions in its order, first to last.
        told = caption_emotions(e.caption)
        arc = _collapse([f.segments[i].label for i in d.arc])
        assert told[0] == arc[0] and told[-1] == arc[-1], (told, arc)
        assert all(s.text.endswith(".") for s in e.caption_sentences)


def test_arc_runs_to_the_end_of_the_clip(analyses):
    """Brief, uncertain segments in the middle must not crowd out where the clip ends."""
    a = analyses("WolfgangLanger_Pexels.mp4", fps=8)
    t = a.tracks[0]
    f = ev.facts(a, t)
    last_long = [s for s in t.segments if s.end - s.start >= 0.05 * (t.end - t.start)][-1]
    arc = engine.decide(a, t).arc
    assert f.segments[arc[-1]].label == last_long.label and f.segments[arc[0]].label == t.segments[0].label


def test_a_still_with_several_faces_heads_each_face_without_a_time_span(analyses):
    """multi_face.jpg: five faces, one block each; a still has no time span (the header
    read "Face 1 (0.0-0.0 s)"), and eyelids lowered in a still are not "a long closure"."""
    from agent import explain

    a = analyses("multi_face.jpg")
    r = explain(a, backend="engine")
    assert len(r.explanations) == len(a.tracks) >= 2
    heads = [line for line in r.text.splitlines() if line.startswith("### Face")]
    assert heads == [f"### Face {t.track_id}" for t in a.tracks]
    assert "long eye closure" not in r.text
