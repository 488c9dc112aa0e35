"""The Exp-CoT engine: a deterministic writer of explanations from an `Analysis` alone.

Three jobs: the teacher whose text the student model is fine-tuned on, the
fallback when a model's answer is unusable, and the baseline in evals. It
reads only measurements, so every AU it cites was observed in the cited span;
it varies its wording with a seeded choice among phrasings (prompts/
engine_phrases.yaml) so a student learns the content rather than one string.
"""

from __future__ import annotations

import random

import prompts
from agent import evidence as ev
from agent.schema import Conclusion, EvidenceItem, Explanation, KeyObservation
from tools.analysis import Analysis, EmotionSegment, Track

MAX_OBSERVATIONS = 5
# A non-neutral label wins the conclusion over a longer neutral stretch when it
# covers at least this share of the track: a clip that turns into a smile is
# "happiness", not "neutral".
EXPRESSIVE_SHARE = 0.25
NEUTRAL = "neutral"


class _Writer:
    def __init__(self, analysis: Analysis, track: Track, seed: int):
        self.a, self.t = analysis, track
        self.rng = random.Random(f"{seed}:{track.track_id}")
        self.p = prompts.load_yaml("engine_phrases")
        self.cues = prompts.load_yaml("au_cues")
        self.emos = prompts.load_yaml("emotion_phrases")
        self.narrated: set[str] = set()  # AUs the caption already described

    def pick(self, key: str, **kw) -> str:
        return prompts.fill(self.rng.choice(self.p[key]), **kw)

    def state(self, label: str) -> str:
        bank = self.emos.get(label) or self.emos["_default"]
        return prompts.fill(self.rng.choice(bank["state"]), label=label)

    def suggests(self, au: str) -> str:
        cue = self.cues.get(au)
        return self.rng.choice(cue["suggests"]) if cue else "a facial movement"

    def action(self, au: str) -> str:
        cue = self.cues.get(au)
        return self.rng.choice(cue["action"]) if cue else f"{au} activates"

    def listing(self, items: list[str]) -> str:
        if len(items) <= 1:
            return "".join(items)
        return ", ".join(items[:-1]) + f" {self.p['and_word']} " + items[-1]


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


def _observations(w: _Writer, spans: list[ev.AUSpan]) -> list[KeyObservation]:
    # One line per AU (its strongest activation), blinks last: they carry little meaning.
    best: dict[str, ev.AUSpan] = {}
    for s in spans:
        if s.au not in best:
            best[s.au] = s
    chosen = sorted(best.values(), key=lambda s: (s.au == "AU45", -s.peak))[:MAX_OBSERVATIONS]
    chosen.sort(key=lambda s: s.start)
    return [KeyObservation(au=s.au, name=s.name, intensity=round(s.peak, 2), start=round(s.start, 2),
                           end=round(s.end, 2), suggests=w.suggests(s.au)) for s in chosen]


def _fmt_spans(spans: list[tuple[float, float]]) -> str:
    return ", ".join(f"{a:.1f} s" if b - a < 0.05 else f"{a:.1f}-{b:.1f} s" for a, b in spans[:3])


def _interpretation(w: _Writer, obs: list[KeyObservation], concl: Conclusion,
                    segs: list[EmotionSegment]) -> str:
    a, t = w.a, w.t
    probs = ev.mean_emotions(a, t)
    prob = f"{probs.get(concl.label, concl.confidence):.2f}"
    if obs:
        cues = w.listing([f"{o.au} ({o.name})" for o in obs if o.au != "AU45"] or
                         [f"{o.au} ({o.name})" for o in obs])
        text = w.pick("interp_cues", cues=cues, label=concl.label)
    else:
        text = w.pick("interp_no_cues", label=concl.label, prob=prob)
    codes = {o.au for o in obs}
    if "AU12" in codes and "AU06" in codes:
        text += w.pick("interp_duchenne")
    elif "AU12" in codes:
        text += w.pick("interp_smile_no_duchenne")
    # The arc of the clip: segments lasting at least 5% of the track (and 0.5 s),
    # so a burst of brief, uncertain segments does not crowd out the ending.
    span = (t.end - t.start) if t.n > 1 else 0.0
    main = [s for s in segs if not s.micro and s.end - s.start >= max(0.5, 0.05 * span)]
    order: list[str] = []
    for s in main or [s for s in segs if not s.micro] or segs:
        if not order or order[-1] != s.label:
            order.append(s.label)
    if len(order) > 6:
        order = [*order[:3], "...", *order[-2:]]
    if len(order) > 1:
        text += w.pick("interp_sequence", sequence=" -> ".join(order))
    if obs and probs:
        text += w.pick("interp_prob", label=concl.label, prob=prob)
    others = sorted((k for k in probs if k not in (concl.label, NEUTRAL) and k not in order),
                    key=lambda k: -probs[k])[:3]
    if others:
        text += w.pick("interp_ruled_out", others=w.listing(others),
                       prob=f"{max(probs[k] for k in others):.2f}")
    occ = ev.occluded_spans(t)
    if occ:
        text += w.pick("interp_occlusion", share=f"{ev.occluded_share(t):.0%}", spans=_fmt_spans(occ))
    text += w.pick("interp_valence", valence=f"{concl.valence:+.2f}", arousal=f"{concl.arousal:+.2f}")
    ctx = a.context
    if ctx.status == "ok" and ctx.scene:
        scene, score = max(ctx.scene.items(), key=lambda kv: kv[1])
        text += w.pick("interp_context", scene=scene, score=f"{score:.2f}")
    return text


def _actions_in(w: _Writer, spans: list[ev.AUSpan], start: float, end: float) -> str:
    """Caption phrase for the strongest AUs whose activation begins inside [start, end],
    each AU narrated once per caption."""
    seen: list[str] = []
    for s in spans:  # strongest first
        if (start - ev.TIME_TOLERANCE_S <= s.start <= end and s.au not in seen
                and s.au not in w.narrated and s.au != "AU45"):
            seen.append(s.au)
    w.narrated.update(seen[:3])
    return w.listing([w.action(au) for au in seen[:3]])


def _caption(w: _Writer, segs: list[EmotionSegment], spans: list[ev.AUSpan], label: str) -> str:
    t = w.t
    subject = w.rng.choice(w.p["subject"]) if len(w.a.tracks) <= 1 else prompts.fill(
        w.rng.choice(w.p["subject_face"]), track=t.track_id)
    if w.a.source.kind == "image" or t.n <= 1:
        text = w.pick("caption_image", subject=subject, state=w.state(label))
        acts = _actions_in(w, spans, t.start - 1.0, t.end + 1.0)
        return text + (w.pick("caption_image_actions", actions=acts) if acts else ".")
    if not segs:
        segs = [EmotionSegment(label=label, start=t.start, end=t.end, peak_time=t.start,
                               mean_prob=0.0, peak_prob=0.0)]
    major = [s for s in segs if not s.micro] or segs
    first, last = major[0], major[-1]
    # The middle of the story: the longest stretch unlike both ends, if any.
    middle = sorted([s for s in major[1:-1] if s.label not in (first.label, last.label)]
                    or major[1:-1], key=lambda s: s.start - s.end)
    begin = w.pick("caption_begin", subject=subject, state=w.state(first.label))
    acts = _actions_in(w, spans, t.start, first.start + 0.5 * (first.end - first.start))
    begin += w.pick("caption_begin_actions", actions=acts) if acts else "."
    mid_seg = middle[0] if middle else last
    mid_start = first.end if len(major) > 1 else t.start + (t.end - t.start) / 3
    mid_end = mid_seg.end if len(major) > 1 else t.start + 2 * (t.end - t.start) / 3
    mid_acts = _actions_in(w, spans, mid_start - 0.5, mid_end)
    if len(major) == 1:
        mid = (w.pick("caption_middle_steady_actions", actions=mid_acts) if mid_acts
               else w.pick("caption_middle_steady"))
        end = w.pick("caption_end_same", subject=subject, state=w.state(last.label))
    else:
        state = w.state(mid_seg.label)
        mid = (w.pick("caption_middle_change", actions=mid_acts, state=state, subject=subject)
               if mid_acts else w.pick("caption_middle_change_plain", state=state, subject=subject))
        if mid_seg is last:
            end = w.pick("caption_end_same", subject=subject, state=w.state(last.label))
        else:
            end = w.pick("caption_end", subject=subject, state=w.state(last.label))
    extra = ""
    occ = ev.occluded_spans(t)
    if occ:
        extra += w.pick("caption_occluded", spans=_fmt_spans(occ))
    micro = [s for s in segs if s.micro and s.label != NEUTRAL]
    if micro:
        extra += w.pick("caption_micro", state=w.state(micro[0].label), time=f"{micro[0].peak_time:.1f}")
    return " ".join([begin, mid, end]) + extra


def evidence_items(analysis: Analysis, track: Track) -> list[EvidenceItem]:
    items = [EvidenceItem(kind="segment", label=s.label, start=round(s.start, 3), end=round(s.end, 3),
                          peak_time=round(s.peak_time, 3), value=round(s.mean_prob, 3))
             for s in ev.segments(analysis, track)]
    items += [EvidenceItem(kind="event", label=s.au, start=round(s.start, 3), end=round(s.end, 3),
                           peak_time=round(s.apex, 3), value=round(s.peak, 3))
              for s in sorted(ev.au_spans(analysis, track), key=lambda s: s.start)]
    return items


def explain_track(analysis: Analysis, track: Track, seed: int = 0) -> Explanation:
    """The engine's explanation of one face track."""
    w = _Writer(analysis, track, seed)
    segs = ev.segments(analysis, track)
    spans = ev.au_spans(analysis, track)
    concl = conclude(analysis, track)
    obs = _observations(w, spans)
    return Explanation(
        track_id=track.track_id,
        key_observations=obs,
        interpretation=_interpretation(w, obs, concl, segs),
        conclusion=concl,
        caption=_caption(w, segs, spans, concl.label),
        evidence=evidence_items(analysis, track),
    )


def explain(analysis: Analysis, seed: int = 0) -> list[Explanation]:
    """One engine explanation per face track (empty for a face-free video)."""
    return [explain_track(analysis, t, seed) for t in analysis.tracks]
