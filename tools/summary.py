"""The short human summary `facereason analyze` prints."""

from __future__ import annotations

from tools.analysis import NO_FACE, Analysis


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
            from tools.timeline import describe  # scipy: only when there is a timeline to tell

            lines.append(describe(analysis))
    for w in analysis.warnings:
        if w != NO_FACE:
            lines.append(f"warning: {w}")
    if elapsed_s is not None:
        n = analysis.sampling.frames_analysed
        lines.append(f"time taken: {elapsed_s:.2f} s ({n / max(elapsed_s, 1e-9):.0f} frames/s)")
    return "\n".join(lines)
