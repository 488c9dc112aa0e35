"""The plain-words summary `facereason analyze` prints: the source, the faces, and for each
face its emotion segments, AU events and overall reading (tools/timeline.py measures them)."""

from __future__ import annotations

from tools.analysis import NO_FACE, Analysis, AUEvent, EmotionSegment, Track
from tools.timeline import NEUTRAL, build_timeline, observed_spans


def summarize(analysis: Analysis, elapsed_s: float | None = None) -> str:
    s = analysis.source
    lines = []
    if s.kind == "video":
        lines.append(f"{s.name}: video {s.width}x{s.height}, {s.duration_s or 0:.1f} s at "
                     f"{s.native_fps or 0:.1f} fps ({s.codec})")
        lines.append(f"frames analysed: {analysis.sampling.frames_analysed} of "
                     f"{analysis.sampling.frames_decoded} decoded"
                     + (f" (sampled at {analysis.sampling.target_fps:g} fps)"
                        if analysis.sampling.target_fps else ""))
    else:
        lines.append(f"{s.name}: image {s.width}x{s.height}")
    if analysis.no_face:
        lines.append("faces found: none (no face found)")
    else:
        lines.append(f"faces found: {len(analysis.tracks)}")
        for t in analysis.tracks:
            span = f"{t.start:.2f}-{t.end:.2f} s, {t.n} frames" if s.kind == "video" else "still"
            lines.append(f"  face {t.track_id}: {span}, mean quality {float(t.confidence.mean()):.2f}")
        if any(t.segments or t.events for t in analysis.tracks):
            lines.append(describe(analysis))
    for w in analysis.warnings:
        if w != NO_FACE:
            lines.append(f"warning: {w}")
    if elapsed_s is not None:
        n = analysis.sampling.frames_analysed
        lines.append(f"time taken: {elapsed_s:.2f} s ({n / max(elapsed_s, 1e-9):.0f} frames/s)")
    return "\n".join(lines)


MAX_EVENTS_DESCRIBED = 12


def _fmt_segment(s: EmotionSegment, still: bool) -> str:
    if still:
        return f"{s.label} (p={s.peak_prob:.2f})"
    text = f"{s.start:.1f}-{s.end:.1f} s: {s.label}"
    details = []
    if s.label != NEUTRAL:
        details.append(f"peak {s.peak_time:.1f} s, p={s.peak_prob:.2f}")
    if s.micro:
        details.append("brief: possible micro-expression")
    return text + (f" ({'; '.join(details)})" if details else "")


def _fmt_event(e: AUEvent, still: bool) -> str:
    if still:
        return f"{e.au} {e.name} {e.peak_intensity:.1f}/5"
    text = (f"{e.au} {e.name} {e.onset:.1f}-{e.offset:.1f} s "
            f"(apex {e.apex:.1f} s, {e.peak_intensity:.1f}/5")
    return text + (", brief: possible micro-expression)" if e.micro else ")")


def describe_track(track: Track, emotion_labels: list[str], au_codes: list[str]) -> list[str]:
    """Plain-words lines for one track: segments, AU events, summary."""
    if track.summary is None:  # not annotated yet: compute, without changing the track
        segments, events, summary = build_timeline(track, emotion_labels, au_codes)
    else:
        segments, events, summary = track.segments, track.events, track.summary
    still = track.n == 1
    head = f"Face {track.track_id}" + (" (still image)" if still else "")
    timed = [(s.start, _fmt_segment(s, still)) for s in segments]
    if not still:  # say where the face was out of view
        spans = observed_spans(track.timestamps)
        for (_, a), (b, _) in zip(spans[:-1], spans[1:], strict=True):
            timed.append((a, f"{a:.1f}-{b:.1f} s: face not visible"))
    seg_parts = [text for _, text in sorted(timed, key=lambda x: x[0])]
    lines = [f"{head}, " + ("; ".join(seg_parts) if seg_parts else "no emotion measured")]
    if events:
        shown = events
        if len(events) > MAX_EVENTS_DESCRIBED:  # keep the strongest, in time order
            top = sorted(events, key=lambda e: -e.peak_intensity)[:MAX_EVENTS_DESCRIBED]
            shown = sorted(top, key=lambda e: (e.onset, e.au))
        more = len(events) - len(shown)
        lines.append("  AUs: " + "; ".join(_fmt_event(e, still) for e in shown)
                     + (f"; and {more} weaker event(s)" if more else ""))
    elif track.aus is not None:
        lines.append("  AUs: none above trace level")
    parts = []
    if segments:
        parts.append(f"mostly {summary.dominant_emotion} ({summary.dominant_share:.0%} of the time)"
                     if not still else f"{summary.dominant_emotion}")
    if summary.strongest_aus:
        parts.append("strongest " + ", ".join(f"{a} {v:.1f}" for a, v in summary.strongest_aus))
    if track.valence is not None:
        parts.append(f"valence {summary.mean_valence:+.2f}")
    if track.arousal is not None:
        parts.append(f"arousal {summary.mean_arousal:+.2f}")
    if summary.occluded_share > 0:
        parts.append(f"face partly covered {summary.occluded_share:.0%} of the time")
    if parts:
        lines.append("  Overall: " + "; ".join(parts))
    return lines


def describe(analysis: Analysis) -> str:
    """Plain-words summary of segments and events per track, for the CLI."""
    if analysis.no_face:
        return NO_FACE
    lines: list[str] = []
    for tr in analysis.tracks:
        lines += describe_track(tr, analysis.emotion_labels, analysis.au_codes)
    return "\n".join(lines)
