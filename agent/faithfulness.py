"""Faithfulness: every AU, emotion and time an explanation cites must be in the `Analysis`.

Checked claims (each violation becomes one sentence in `unfaithful_claims`):
- a key observation's AU must be a known code, observed above the occurrence
  threshold in the cited span (+- `TIME_TOLERANCE_S`), at roughly the cited
  intensity (no more than `INTENSITY_SLACK` above the measured peak);
- AU codes named in the interpretation or caption must be observed in the
  track, unless the sentence negates them ("no AU04", "without AU06");
- emotion labels named in the caption must be among the track's segments;
- times cited as "at N s" must fall inside the face's time span;
- the conclusion's label must belong to the active label set.
"""

from __future__ import annotations

import re

from agent import evidence as ev
from agent.schema import Explanation, au_code
from tools.analysis import Analysis, Track

INTENSITY_SLACK = 1.0  # FACS intensity points a claim may exceed the measured peak by
_NEGATION = re.compile(r"\b(no|not|never|without|absent|absence|lack\w*|rul\w* out|none)\b", re.I)
_AU = re.compile(r"\bAU\s?0?(\d{1,2})\b", re.I)
_TIME = re.compile(r"\bat\s+(?:about\s+|around\s+)?(\d+(?:\.\d+)?)\s*(?:s\b|sec)", re.I)


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?;])\s+|\n+", text) if s.strip()]


def _peak_in(analysis: Analysis, track: Track, au: str, start: float, end: float) -> float:
    peaks = [s.peak for s in ev.au_spans(analysis, track) if s.au == au
             and s.start - ev.TIME_TOLERANCE_S <= end and s.end + ev.TIME_TOLERANCE_S >= start]
    return max(peaks, default=0.0)


def check_text_claims(text: str, analysis: Analysis, track: Track, where: str,
                      check_labels: bool = False) -> list[str]:
    """AU codes, labels and times cited in free text (an interpretation, caption or chat answer)."""
    out: list[str] = []
    labels = {s.label for s in ev.segments(analysis, track)}
    for sent in _sentences(text):
        negated = bool(_NEGATION.search(sent))
        if not negated:
            for m in _AU.finditer(sent):
                code = au_code(m.group(1))
                if not ev.au_observed(analysis, track, code):
                    out.append(f"{where}: cites {code}, which was not observed for face {track.track_id}")
            if check_labels:
                for lab in analysis.emotion_labels:
                    if re.search(rf"\b{re.escape(lab)}\b", sent, re.I) and lab not in labels:
                        out.append(f"{where}: names '{lab}', which is not among face "
                                   f"{track.track_id}'s emotion segments")
        for m in _TIME.finditer(sent):
            t = float(m.group(1))
            if not track.start - ev.TIME_TOLERANCE_S <= t <= track.end + ev.TIME_TOLERANCE_S:
                out.append(f"{where}: cites {t:g} s, outside face {track.track_id}'s "
                           f"{track.start:.1f}-{track.end:.1f} s")
    return list(dict.fromkeys(out))


def check(explanation: Explanation, analysis: Analysis) -> list[str]:
    """Violations, one sentence each; an empty list means every cited claim was measured."""
    try:
        track = analysis.track(explanation.track_id)
    except KeyError:
        return [f"face {explanation.track_id} does not exist in the analysis"]
    out: list[str] = []
    for o in explanation.key_observations:
        code = o.au.upper()
        if code not in analysis.au_codes:
            out.append(f"key observation: {o.au} is not an Action Unit this analysis measures")
            continue
        has_span = o.end > 0 or o.start > 0
        start, end = (o.start, o.end) if has_span else (None, None)
        if not ev.au_observed(analysis, track, code, start, end):
            when = f" at {o.start:.1f}-{o.end:.1f} s" if has_span else ""
            out.append(f"key observation: {code} was not observed above threshold{when}")
            continue
        peak = _peak_in(analysis, track, code, o.start, o.end) if has_span else max(
            (s.peak for s in ev.au_spans(analysis, track) if s.au == code), default=0.0)
        if o.intensity > peak + INTENSITY_SLACK:
            out.append(f"key observation: {code} intensity {o.intensity:.1f} overstates the "
                       f"measured peak {peak:.1f}")
    out += check_text_claims(explanation.interpretation, analysis, track, "interpretation")
    out += check_text_claims(explanation.caption, analysis, track, "caption", check_labels=True)
    if explanation.conclusion.label not in analysis.emotion_labels:
        out.append(f"conclusion: '{explanation.conclusion.label}' is not in the label set")
    return list(dict.fromkeys(out))
