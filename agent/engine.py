"""The Exp-CoT engine: a deterministic decision from the measurements alone.

It writes the same `Decision` a model writes (agent/decision.py), by fixed
rules, and agent/render.py turns it into text exactly as it does a model's.
Three jobs: the fallback when a model's reply is unusable, the baseline of
the evaluation table, and one more piece of evidence in the prompt ("Rule-
based reading: ..."), which a fine-tuned model learns to override where the
rules are wrong (contempt smirks, fear read as surprise).
"""

from __future__ import annotations

from agent import evidence as ev
from agent import render
from agent.decision import MAX_ARC, MAX_CITE, Decision
from agent.schema import Conclusion, Explanation
from tools.analysis import Analysis, EmotionSegment, Track
from tools.facs import NEUTRAL

# A non-neutral label wins the conclusion over a longer neutral stretch when it
# covers at least this share of the track: a clip that turns into a smile is
# "happiness", not "neutral".
EXPRESSIVE_SHARE = 0.25


def _durations(segs: list[EmotionSegment]) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in segs:
        out[s.label] = out.get(s.label, 0.0) + max(s.end - s.start, 0.0)
    return out


def conclude(analysis: Analysis, track: Track) -> Conclusion:
    """Label, confidence, valence and arousal of one track, from measurements only."""
    segs = ev.segments(analysis, track)
    labels = analysis.emotion_labels
    probs = ev.mean_emotions(analysis, track)
    dur = _durations(segs)
    total = sum(dur.values()) or 1.0
    if dur:
        label = max(dur, key=lambda k: (dur[k], probs.get(k, 0.0)))
        expressive = {k: v for k, v in dur.items() if k != NEUTRAL}
        if label == NEUTRAL and expressive:
            best = max(expressive, key=lambda k: (expressive[k], probs.get(k, 0.0)))
            if expressive[best] / total >= EXPRESSIVE_SHARE:
                label = best
        # Confidence: how strongly and for how long the label held where it was seen.
        held = [s.mean_prob for s in segs if s.label == label]
        conf = (sum(held) / len(held)) * (0.5 + 0.5 * dur[label] / total)
    elif probs:
        label = max(probs, key=probs.get)
        conf = probs[label]
    elif track.summary is not None and track.summary.dominant_emotion in labels:
        label, conf = track.summary.dominant_emotion, track.summary.dominant_share
    else:
        label = NEUTRAL if NEUTRAL in labels else labels[0]
        conf = 0.0
    val, aro = ev.mean_affect(track)
    return Conclusion(label=label, confidence=round(min(max(conf, 0.0), 1.0), 3),
                      valence=round(min(max(val, -1.0), 1.0), 3),
                      arousal=round(min(max(aro, -1.0), 1.0), 3))


def cite_events(f: ev.FaceFacts, label: str) -> list[str]:
    """Event ids for the key observations: each AU's strongest activation, the label's own
    (EMFACS) AUs first, topped up with the strongest others to at least two; none for
    a neutral face. Blinks only when nothing else moved."""
    if label == NEUTRAL:
        return []
    best: dict[str, str] = {}
    for eid, e in sorted(f.events.items(), key=lambda kv: -kv[1].peak):
        best.setdefault(e.au, eid)
    own = ev.prototype_aus(label)
    mine = [i for au, i in best.items() if au in own]
    others = [i for au, i in best.items() if au not in own and au != "AU45"]
    chosen = mine[:MAX_CITE]
    if len(chosen) < 2:
        chosen += others[:2 - len(chosen)]
    if not chosen and "AU45" in best:
        chosen = [best["AU45"]]
    return sorted(chosen, key=lambda i: f.events[i].start)


def arc_segments(f: ev.FaceFacts) -> list[str]:
    """Segment ids of the story: the segments long enough to tell
    (`FaceFacts.story_segments`); a run of the same label is told once (its longest
    segment); at most MAX_ARC (the ends and the longest middles)."""
    main = [(i, f.segments[i]) for i in f.story_segments()]
    runs: list[list[tuple[str, EmotionSegment]]] = []
    for i, s in main:
        if runs and runs[-1][-1][1].label == s.label:
            runs[-1].append((i, s))
        else:
            runs.append([(i, s)])
    arc = [max(r, key=lambda x: x[1].end - x[1].start)[0] for r in runs]
    if len(arc) > MAX_ARC:
        middle = sorted(arc[1:-1], key=lambda i: -(f.segments[i].end - f.segments[i].start))
        keep = set(middle[:MAX_ARC - 2]) | {arc[0], arc[-1]}
        arc = [i for i in arc if i in keep]
    return arc


def decide(analysis: Analysis, track: Track) -> Decision:
    """The engine's decision for one face."""
    f = ev.facts(analysis, track)
    c = conclude(analysis, track)
    arc = arc_segments(f)
    arc_labels = {f.segments[i].label for i in arc}
    probs = ev.mean_emotions(analysis, track)
    others = sorted((k for k in probs if k not in (c.label, NEUTRAL) and k not in arc_labels),
                    key=lambda k: -probs[k])
    alt = others[0] if others and probs[others[0]] >= 0.05 else None
    return Decision(label=c.label, conf=round(c.confidence, 2), cite=cite_events(f, c.label),
                    arc=arc, alt=alt, why=[], note="")


def explain_track(analysis: Analysis, track: Track, seed: int = 0,
                  fallback_reason: str | None = None) -> Explanation:
    """The engine's explanation of one face track."""
    return render.explanation(analysis, track, decide(analysis, track), seed=seed,
                              decided_by="engine", fallback_reason=fallback_reason)


def explain(analysis: Analysis, seed: int = 0) -> list[Explanation]:
    """One engine explanation per face track (empty for a face-free video)."""
    return [explain_track(analysis, t, seed) for t in analysis.tracks]
