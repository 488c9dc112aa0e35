"""Read-only views of an `Analysis` for the agent, and its compact text rendering.

Everything the engine, the tools and the faithfulness check know about a face
comes from here, and everything here reads only the `Analysis` (segments,
events, summary, columnar series). When timeline has not filled events or
segments, the views fall back on the raw series so the agent still has facts.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

import prompts
from tools.analysis import Analysis, EmotionSegment, Track
from tools.facs import AU_NAMES, AU_OCCURRENCE_THRESHOLD
from tools.occlusion import FLAG

# A cited time may miss the measured span by this much (half a typical 4-frame
# smoothing window at 8 fps) and still count as the same moment.
TIME_TOLERANCE_S = 0.25
OCCLUDED = FLAG  # occlusion score at which a frame counts as occluded (tools.occlusion owns it)


@dataclass(frozen=True)
class AUSpan:
    """One observed activation of an AU: from an AUEvent, or from the occurrence series."""

    au: str
    name: str
    start: float
    end: float
    apex: float
    peak: float
    micro: bool = False


@functools.cache
def prototype_aus(label: str) -> frozenset[str]:
    """The AUs of a label's EMFACS prototypes and major variants (prompts/emfacs.yaml; empty
    for other labels): what the renderer says "points to" a label, and what the faithfulness
    check lets a text pair with it."""
    cls = prompts.load_yaml("emfacs")["classes"].get(label)
    if not cls:
        return frozenset()
    return frozenset(code for p in cls["prototypes"] for item in p["aus"] for code in item.split("|"))


def au_names(analysis: Analysis) -> dict[str, str]:
    return {c: AU_NAMES.get(c, c) for c in analysis.au_codes}


def occurrence(analysis: Analysis, track: Track) -> np.ndarray | None:
    """(n, K) boolean: AU present per frame (the occurrence series, or intensity >= threshold)."""
    if track.au_occurrence is not None:
        occ = np.asarray(track.au_occurrence) > 0.5
    elif track.aus is not None:
        occ = np.asarray(track.aus) >= AU_OCCURRENCE_THRESHOLD
    else:
        return None
    if track.au_reliable is not None:
        occ = occ & (np.asarray(track.au_reliable) > 0.5)
    return occ


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [i, j] (inclusive) of consecutive True values."""
    idx = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return [(int(a), int(b) - 1) for a, b in zip(idx[::2], idx[1::2], strict=True)]


def au_spans(analysis: Analysis, track: Track) -> list[AUSpan]:
    """Observed AU activations, strongest first; events when timeline made them."""
    names = au_names(analysis)
    if track.events:
        spans = [AUSpan(e.au, e.name or names.get(e.au, e.au), e.onset, e.offset, e.apex,
                        e.peak_intensity, e.micro) for e in track.events]
    else:
        spans = []
        occ = occurrence(analysis, track)
        if occ is not None and track.aus is not None and track.n:
            ts = np.asarray(track.timestamps, dtype=float)
            aus = np.asarray(track.aus, dtype=float)
            for k, code in enumerate(analysis.au_codes):
                for a, b in _runs(occ[:, k]):
                    seg = aus[a:b + 1, k]
                    i = a + int(np.argmax(seg))
                    spans.append(AUSpan(code, names.get(code, code), float(ts[a]), float(ts[b]),
                                        float(ts[i]), float(seg.max()), float(ts[b] - ts[a]) < 0.5))
    return sorted(spans, key=lambda s: (-s.peak, s.start))


def au_observed(analysis: Analysis, track: Track, au: str, start: float | None = None,
                end: float | None = None, tol: float = TIME_TOLERANCE_S) -> bool:
    """True if `au` is present in the track (optionally overlapping [start, end] +- tol)."""
    if au not in analysis.au_codes:
        return False
    for s in au_spans(analysis, track):
        if s.au != au:
            continue
        if start is None or (s.start - tol <= (end if end is not None else start)
                             and s.end + tol >= start):
            return True
    return False


def segments(analysis: Analysis, track: Track) -> list[EmotionSegment]:
    """Emotion segments in time order; one whole-track segment when timeline made none."""
    if track.segments:
        return sorted(track.segments, key=lambda s: s.start)
    if track.emotions is None or not track.n or not analysis.emotion_labels:
        return []
    probs = np.asarray(track.emotions, dtype=float)
    mean = probs.mean(axis=0)
    k = int(np.argmax(mean))
    i = int(np.argmax(probs[:, k]))
    return [EmotionSegment(label=analysis.emotion_labels[k], start=track.start, end=track.end,
                           peak_time=float(track.timestamps[i]), mean_prob=float(mean[k]),
                           peak_prob=float(probs[i, k]))]


def window(track: Track, start: float, end: float) -> np.ndarray:
    """Row indices of frames with start <= t <= end (the nearest frame if none falls inside)."""
    ts = np.asarray(track.timestamps, dtype=float)
    idx = np.flatnonzero((ts >= start) & (ts <= end))
    if idx.size == 0 and ts.size:
        idx = np.array([int(np.argmin(np.abs(ts - (start + end) / 2)))])
    return idx


def mean_emotions(analysis: Analysis, track: Track, rows: np.ndarray | None = None) -> dict[str, float]:
    if track.emotions is None or not track.n:
        return {}
    e = np.asarray(track.emotions, dtype=float)
    e = e if rows is None else e[rows]
    return {lab: float(v) for lab, v in zip(analysis.emotion_labels, e.mean(axis=0), strict=False)}


def mean_affect(track: Track, rows: np.ndarray | None = None) -> tuple[float, float]:
    """Mean valence and arousal (summary values when the series are absent)."""
    out = []
    for name in ("valence", "arousal"):
        s = getattr(track, name)
        if s is not None and track.n:
            a = np.asarray(s, dtype=float)
            out.append(float((a if rows is None else a[rows]).mean()))
        elif track.summary is not None:
            out.append(float(getattr(track.summary, f"mean_{name}")))
        else:
            out.append(0.0)
    return out[0], out[1]


# Covered stretches closer than this are told as one: the flag flickers frame to frame
# under a moving hand, and WolfgangLanger's 2.5-5.3 s (9% of the clip) was told as
# "2.5 s, 2.9-3.1 s, 3.2-3.3 s", the first three of its many pieces.
OCCLUDED_GAP_S = 0.5


def occluded_spans(track: Track, join: bool = True) -> list[tuple[float, float]]:
    """The covered stretches as the text tells them: tools.timeline's spans (each frame
    lasting until the next), joined across gaps under OCCLUDED_GAP_S (`join`).

    The prompt (`render_track`) keeps the pieces, as the shipped model was trained on
    them: given WolfgangLanger's joined 2.5-5.3 s, SFT v8 left the crying out of the arc
    (its caption opened "the person has a cheerful smile")."""
    from tools import timeline  # scipy: not at import, `facereason --help` imports this module

    if not join:
        return timeline.occluded_spans(track)
    out: list[tuple[float, float]] = []
    for a, b in timeline.occluded_spans(track):
        if out and a - out[-1][1] < OCCLUDED_GAP_S:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def occluded_share(track: Track) -> float:
    """tools.timeline owns the share (duration-weighted, the number the plots show)."""
    from tools import timeline

    return timeline.occluded_share(track)


def top_aus(analysis: Analysis, track: Track, rows: np.ndarray | None = None,
            k: int = 3) -> list[tuple[str, float]]:
    """The k AUs with the highest peak intensity over `rows`, only those above threshold."""
    if track.aus is None or not track.n:
        if track.summary is not None:
            return [(a, float(v)) for a, v in track.summary.strongest_aus[:k]
                    if v >= AU_OCCURRENCE_THRESHOLD]
        return []
    aus = np.asarray(track.aus, dtype=float)
    occ = occurrence(analysis, track)
    if rows is not None:
        aus, occ = aus[rows], (occ[rows] if occ is not None else None)
    peak = np.where(occ, aus, 0.0).max(axis=0) if occ is not None and len(aus) else aus.max(axis=0)
    order = np.argsort(-peak)[:k]
    return [(analysis.au_codes[i], float(peak[i])) for i in order if peak[i] >= AU_OCCURRENCE_THRESHOLD]


def _f(x: float) -> str:
    return f"{x:.1f}"


# ------------------------------------------------------------------ ids
SHOWN_EVENTS = 12  # events listed in the prompt (strongest first); the rest via list_events
SHOWN_SEGMENTS = 8  # segments listed in the prompt (longest first); the rest via inspect_face
# A segment is part of the story (the engine's arc, the caption's opening and closing rest)
# when it lasts at least this share of the track and this many seconds.
STORY_MIN_SHARE = 0.05
STORY_MIN_S = 0.5


@dataclass(frozen=True)
class FaceFacts:
    """One face's segments and AU events with the ids the model cites.

    An id says what it names: `happiness1` is the face's longest happiness segment,
    `happiness2` the next longest; `AU12a` is its strongest AU12 activation, `AU12b`
    the next. A small model picks "the smile" by writing AU12 and happiness, rather
    than by finding which opaque number sits on that line of the prompt (with ids
    E1, E2... in time order it learned to cite the first few, whatever they were).
    The dicts are in time order; the same id means the same measurement in the
    prompt, in tool results and in a decision.
    """

    track: Track
    segments: dict[str, EmotionSegment]
    events: dict[str, AUSpan]

    def kind(self, ref: str) -> str | None:
        if ref in self.segments:
            return "segment"
        if ref in self.events:
            return "event"
        return None

    def shown_events(self) -> list[str]:
        """Ids of the events the prompt lists: the strongest SHOWN_EVENTS, in time order."""
        strongest = sorted(self.events, key=lambda i: (-self.events[i].peak, self.events[i].start))
        keep = set(strongest[:SHOWN_EVENTS])
        return [i for i in self.events if i in keep]

    def shown_segments(self) -> list[str]:
        """Ids of the segments the prompt lists: the longest SHOWN_SEGMENTS, in time order.

        On WolfgangLanger_Pexels.mp4 a covered stretch splits into a dozen short disgust
        and fear flickers; listed by time, they filled the list and the 10 s of laughter
        after them was not in the prompt at all."""
        longest = sorted(self.segments, key=lambda i: (-(self.segments[i].end - self.segments[i].start),
                                                       self.segments[i].start))
        keep = set(longest[:SHOWN_SEGMENTS])
        return [i for i in self.segments if i in keep]

    def story_segments(self) -> list[str]:
        """Ids of the segments long enough to tell, in time order: not micro, and at least
        STORY_MIN_SHARE of the track and STORY_MIN_S long, so a burst of brief, uncertain
        segments does not crowd out the ending (all non-micro ones if none is that long)."""
        t = self.track
        span = (t.end - t.start) if t.n > 1 else 0.0
        floor = max(STORY_MIN_S, STORY_MIN_SHARE * span)
        main = [i for i, s in self.segments.items() if not s.micro and s.end - s.start >= floor]
        return main or [i for i, s in self.segments.items() if not s.micro] or list(self.segments)

    def events_in(self, start: float, end: float, tol: float = TIME_TOLERANCE_S) -> list[str]:
        """Ids of events overlapping [start, end] (+- tol), strongest first."""
        hits = [i for i, e in self.events.items() if e.start - tol <= end and e.end + tol >= start]
        return sorted(hits, key=lambda i: -self.events[i].peak)


def _letters(k: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa ..."""
    out = ""
    k += 1
    while k:
        k, r = divmod(k - 1, 26)
        out = chr(97 + r) + out
    return out


def _ranked(items: list, key, rank_by) -> dict:
    """{item index: rank within its group (0 = first by rank_by)}."""
    groups: dict = {}
    for i, x in enumerate(items):
        groups.setdefault(key(x), []).append(i)
    ranks = {}
    for members in groups.values():
        for r, i in enumerate(sorted(members, key=lambda i: rank_by(items[i]))):
            ranks[i] = r
    return ranks


def facts(analysis: Analysis, track: Track) -> FaceFacts:
    segs = segments(analysis, track)
    spans = sorted(au_spans(analysis, track), key=lambda s: (s.start, -s.peak, s.au))
    seg_rank = _ranked(segs, lambda s: s.label, lambda s: (-(s.end - s.start), s.start))
    ev_rank = _ranked(spans, lambda e: e.au, lambda e: (-e.peak, e.start))
    name = [re.sub(r"\W+", "_", s.label) for s in segs]
    return FaceFacts(track=track,
                     segments={f"{name[k]}{seg_rank[k] + 1}": s for k, s in enumerate(segs)},
                     events={f"{e.au}{_letters(ev_rank[k])}": e for k, e in enumerate(spans)})


def _join(items: list[str], limit: int) -> str:
    text = "; ".join(items[:limit])
    if len(items) > limit:
        text += prompts.fill(prompts.load_yaml("evidence")["more"], n=len(items) - limit)
    return text


def render_track(analysis: Analysis, track: Track, reading: str | None = None) -> str:
    """The face block of the prompt: span, occlusion, affect, segments and events with ids.

    `reading` is the rule-based engine's label, given as one more piece of evidence.
    """
    p = prompts.load_yaml("evidence")
    f = facts(analysis, track)
    occ = occluded_spans(track, join=False)
    occ_text = prompts.fill(p["occluded_spans"], spans=", ".join(
        _f(a) if b - a < 0.05 else f"{_f(a)}-{_f(b)}" for a, b in occ[:4])) if occ else ""
    val, aro = mean_affect(track)
    lines = [prompts.fill(p["face"], track=track.track_id, start=_f(track.start), end=_f(track.end),
                          occluded=f"{occluded_share(track):.0%}", occluded_spans=occ_text,
                          valence=f"{val:+.2f}", arousal=f"{aro:+.2f}")]
    if f.segments:
        lines.append(p["segments"])
        shown_segs = f.shown_segments()
        for sid in shown_segs:
            s = f.segments[sid]
            top = top_aus(analysis, track, window(track, s.start, s.end))
            lines.append(prompts.fill(p["segment_line"], id=sid, label=s.label, start=_f(s.start),
                                      end=_f(s.end), prob=f"{s.mean_prob:.2f}",
                                      micro=p["segment_micro"] if s.micro else "",
                                      aus=", ".join(f"{a} {v:.1f}" for a, v in top) or "-"))
        if len(f.segments) > len(shown_segs):
            lines.append(prompts.fill(p["more_segments"], n=len(f.segments) - len(shown_segs)))
    shown = f.shown_events()
    if shown:
        lines.append(p["events"])
        for eid in shown:
            e = f.events[eid]
            lines.append(prompts.fill(p["event_line"], id=eid, au=e.au, name=e.name,
                                      start=_f(e.start), end=_f(e.end), peak=f"{e.peak:.1f}"))
        if len(f.events) > len(shown):
            lines.append(prompts.fill(p["more_events"], n=len(f.events) - len(shown)))
    else:
        lines.append(p["no_events"])
    if reading:
        lines.append(prompts.fill(p["reading"], label=reading))
    return "\n".join(lines)


def render_context(analysis: Analysis) -> str | None:
    """The scene-context line, only when CLIP scored the scene (an unavailable context
    says nothing about the face and costs prompt tokens)."""
    p = prompts.load_yaml("evidence")
    ctx = analysis.context
    if ctx.status == "ok":
        scores = sorted({**ctx.scene, **ctx.face}.items(), key=lambda kv: -kv[1])[:4]
        return prompts.fill(p["context_line"], model=ctx.model or "CLIP",
                            scores=", ".join(f"{k} {v:.2f}" for k, v in scores))
    return None


def render(analysis: Analysis, track_id: int | None = None,
           readings: dict[int, str] | None = None) -> str:
    """Compact text for the model: media line, context, then each face (or just one)."""
    p = prompts.load_yaml("evidence")
    src = analysis.source
    dur = src.duration_s if src.duration_s is not None else (
        max((t.end for t in analysis.tracks), default=0.0))
    lines = [prompts.fill(p["header"], name=src.name, kind=src.kind, duration=_f(dur or 0.0),
                          n_faces=len(analysis.tracks))]
    if ctx := render_context(analysis):
        lines.append(ctx)
    if analysis.no_face:
        lines.append(p["no_face"])
    for t in analysis.tracks:
        if track_id is None or t.track_id == track_id:
            lines.append(render_track(analysis, t, (readings or {}).get(t.track_id)))
    return "\n".join(lines)
