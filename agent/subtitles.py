"""The caption as subtitles (SubRip .srt and WebVTT .vtt), one cue per caption sentence.

Each caption sentence keeps the span it describes (agent/render.py), so the
cues line up with the video; pysubs2 writes the formats. With several faces a
cue starts with "Face N:". A still image has no timeline: its caption is
one cue of IMAGE_CUE_S seconds.
"""

from __future__ import annotations

from pathlib import Path

from agent.schema import ExplainResult

IMAGE_CUE_S = 3.0
MIN_CUE_S = 0.5  # a cue shorter than this is hard to read


def subtitles(result: ExplainResult, fmt: str = "srt") -> str:
    """The caption sentences of every face as an SRT or WebVTT document."""
    import pysubs2

    if fmt not in ("srt", "vtt"):
        raise ValueError(f"subtitle format must be srt or vtt, not {fmt!r}")
    subs = pysubs2.SSAFile()
    several = len(result.explanations) > 1
    still = result.analysis.source.kind == "image"
    for e in result.explanations:
        for s in e.caption_sentences:
            start = 0.0 if still else s.start
            end = IMAGE_CUE_S if still else max(s.end, s.start + MIN_CUE_S)
            text = f"Face {e.track_id}: {s.text}" if several else s.text
            subs.append(pysubs2.SSAEvent(start=pysubs2.make_time(s=start), end=pysubs2.make_time(s=end),
                                         text=text))
    subs.sort()
    return subs.to_string(fmt)


def write(result: ExplainResult, path: str | Path, fmt: str | None = None) -> Path:
    """Write the subtitles to `path` (format from the suffix unless given)."""
    p = Path(path)
    p.write_text(subtitles(result, fmt or p.suffix.lstrip(".").lower()), encoding="utf-8")
    return p
