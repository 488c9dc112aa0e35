"""The explanation the agent returns for one face track, and its text form.

The text layout follows ExpLLM's chain of thought (Lan et al., 2024, "ExpLLM:
Towards Chain of Thought for Facial Expression Recognition": Key Observations ->
Overall Emotional Interpretation -> Conclusion) followed by a caption in the
FEC-Bench style (At the beginning ... As the video progresses ... Towards the
end ...). Fine-tuning and evals parse that text, so `parse_explanation` reads
back what `Explanation.to_text` writes and tolerates the looser text a small
model produces.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

import prompts
from tools.analysis import Analysis
from tools.facs import AU_NAMES, EMOTIONS

HEAD_OBS = "**Key Observations:**"
HEAD_INTERP = "**Overall Emotional Interpretation:**"
HEAD_CONCL = "**Conclusion:**"
HEAD_CAPTION = "**Caption:**"
HEAD_ANSWER = "**Answer:**"
HEADERS = (HEAD_OBS, HEAD_INTERP, HEAD_CONCL, HEAD_CAPTION)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KeyObservation(_Model):
    au: str = Field(description="AU code, e.g. AU12")
    name: str = Field("", description="FACS name, e.g. lip corner puller")
    intensity: float = Field(0.0, description="peak intensity on the 0-5 scale")
    start: float = Field(0.0, description="seconds")
    end: float = Field(0.0, description="seconds")
    suggests: str = ""


class Conclusion(_Model):
    label: str
    confidence: float = Field(0.0, ge=0.0, le=1.0)
    valence: float = Field(0.0, ge=-1.0, le=1.0)
    arousal: float = Field(0.0, ge=-1.0, le=1.0)


class EvidenceItem(_Model):
    kind: Literal["segment", "event"]
    label: str = Field(description="emotion label (segment) or AU code (event)")
    start: float
    end: float
    peak_time: float | None = None
    value: float | None = Field(None, description="mean probability (segment) or peak intensity")


class CaptionSentence(_Model):
    """One sentence of the caption with the time span it describes and the ids it rests on."""

    text: str
    start: float
    end: float
    evidence: list[str] = Field(default_factory=list, description="segment (happiness1) and event (AU12a) ids")


class Explanation(_Model):
    track_id: int = 0
    key_observations: list[KeyObservation] = Field(default_factory=list)
    interpretation: str = ""
    conclusion: Conclusion
    answer: str = Field("", description="the answer to the question asked with the request, if any")
    caption: str = ""
    caption_sentences: list[CaptionSentence] = Field(default_factory=list)
    evidence: list[EvidenceItem] = Field(default_factory=list)
    decision: dict[str, Any] | None = Field(
        None, description="the record the model (or the engine) decided; agent.decision.Decision")
    decided_by: Literal["model", "engine"] = "model"
    fallback_used: bool = False
    fallback_reason: str | None = None
    unfaithful_claims: list[str] = Field(default_factory=list)
    withheld: list[str] = Field(
        default_factory=list, description="the model's own words that failed the faithfulness "
                                          "check and were not shown, with the reason")

    def to_text(self) -> str:
        """The ExpLLM-style layout that models are trained to write."""
        fmt = prompts.load_yaml("format")
        # A still (one frame: start == end) has no span to state.
        obs = [prompts.fill(fmt["observation_still" if o.start == o.end else "observation_line"],
                            au=o.au, name=o.name or AU_NAMES.get(o.au, o.au),
                            intensity=f"{o.intensity:.1f}", start=f"{o.start:.1f}",
                            end=f"{o.end:.1f}", suggests=o.suggests)
               for o in self.key_observations]
        if not obs:
            obs = [prompts.load_yaml("format")["no_observations"]]
        c = self.conclusion
        concl = prompts.fill(prompts.load_yaml("format")["conclusion_line"], label=c.label,
                             confidence=f"{c.confidence:.2f}", valence=f"{c.valence:+.2f}",
                             arousal=f"{c.arousal:+.2f}")
        answer = [HEAD_ANSWER, self.answer.strip(), ""] if self.answer.strip() else []
        return "\n".join([HEAD_OBS, *obs, "", HEAD_INTERP, self.interpretation.strip(), "",
                          HEAD_CONCL, concl, "", *answer, HEAD_CAPTION, self.caption.strip()])


class ExplainResult(BaseModel):
    """What `agent.explain` returns: the analysis, one explanation per face, and the text."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    analysis: Analysis
    explanations: list[Explanation] = Field(default_factory=list)
    model: str = ""
    backend: str = ""
    timings: dict[str, float] = Field(default_factory=dict)
    text: str = ""
    message: str = ""
    stats: dict[str, Any] = Field(default_factory=dict)

    @property
    def fallback_used(self) -> bool:
        return any(e.fallback_used for e in self.explanations)

    @property
    def unfaithful_count(self) -> int:
        return sum(len(e.unfaithful_claims) for e in self.explanations)


def render_result_text(analysis: Analysis, explanations: list[Explanation], message: str = "") -> str:
    """The whole answer: one block per face, headed by the face when there are several."""
    if not explanations:
        return message
    if len(explanations) == 1:
        return explanations[0].to_text()
    blocks = []
    for e in explanations:
        t = analysis.track(e.track_id) if any(t.track_id == e.track_id
                                               for t in analysis.tracks) else None
        # a still has no time span ("0.0-0.0 s" said nothing)
        span = f" ({t.start:.1f}-{t.end:.1f} s)" if t is not None and t.n > 1 else ""
        blocks.append(f"### Face {e.track_id}{span}\n\n{e.to_text()}")
    return "\n\n".join(blocks)


# ------------------------------------------------------------------ parsing
class ParseError(ValueError):
    """The text does not contain an explanation in the expected layout."""


_NUM = r"[-+]?\d+(?:\.\d+)?"
_AU_RE = re.compile(r"\bAU\s?0?(\d{1,2})\b", re.I)
_SPAN_RE = re.compile(rf"({_NUM})\s*(?:s\b|sec\w*)?\s*(?:-|–|—|to|until)\s*({_NUM})\s*(?:s\b|sec)", re.I)
_AT_RE = re.compile(rf"\bat\s+({_NUM})\s*(?:s\b|sec)", re.I)
_INT_RE = re.compile(rf"intensity\s*(?:of|=|:)?\s*({_NUM})", re.I)
_CONF_RE = re.compile(rf"confidence\s*(?:of|=|:)?\s*({_NUM})\s*(%?)", re.I)
_VAL_RE = re.compile(rf"valence\s*(?:of|=|:)?\s*({_NUM})", re.I)
_ARO_RE = re.compile(rf"arousal\s*(?:of|=|:)?\s*({_NUM})", re.I)


def au_code(number: str | int) -> str:
    return f"AU{int(number):02d}"


def _sections(text: str) -> dict[str, str]:
    """Split on the four headers; tolerant of missing bold, case and trailing colons."""
    names = {"key observations": HEAD_OBS, "overall emotional interpretation": HEAD_INTERP,
             "interpretation": HEAD_INTERP, "conclusion": HEAD_CONCL, "caption": HEAD_CAPTION,
             "answer": HEAD_ANSWER}
    pat = re.compile(r"^[ \t#*]*(key observations|overall emotional interpretation|interpretation|"
                     r"conclusion|caption|answer)[ \t]*:?[ \t*]*:?[ \t]*", re.I | re.M)
    found = list(pat.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(found):
        end = found[i + 1].start() if i + 1 < len(found) else len(text)
        key = names[m.group(1).lower()]
        out.setdefault(key, text[m.end():end].strip())
    return out


def _parse_observation(line: str) -> KeyObservation | None:
    m = _AU_RE.search(line)
    if not m:
        return None
    code = au_code(m.group(1))
    name = AU_NAMES.get(code, "")
    paren = re.search(r"\(([^)]*)\)", line[m.end():m.end() + 60])
    if paren and not re.search(r"\d", paren.group(1)):
        name = paren.group(1).strip()
    intensity = float(x.group(1)) if (x := _INT_RE.search(line)) else 0.0
    span = _SPAN_RE.search(line)
    if span:
        start, end = float(span.group(1)), float(span.group(2))
    elif at := _AT_RE.search(line):
        start = end = float(at.group(1))
    else:
        start = end = 0.0
    suggests = ""
    if s := re.search(r"suggest\w*\s*:?\s*(.+)$", line, re.I):
        suggests = s.group(1).strip().rstrip(".")
    elif ":" in line:
        suggests = line.rsplit(":", 1)[1].strip().rstrip(".")
    return KeyObservation(au=code, name=name, intensity=intensity, start=start, end=min(max(end, start), 1e6),
                          suggests=suggests)


def _clip(v: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, v))


def parse_explanation(text: str, labels: list[str] | None = None, track_id: int = 0) -> Explanation:
    """Read an explanation back from text in the ExpLLM layout.

    Requires the Key Observations and Conclusion sections and a conclusion label
    from `labels` (default: the standard emotion set); raises ParseError naming
    what is missing. Numbers it cannot find default to 0.
    """
    labels = list(labels or EMOTIONS)
    secs = _sections(text)
    missing = [h for h in (HEAD_OBS, HEAD_CONCL) if h not in secs]
    if missing:
        raise ParseError(f"missing section(s): {', '.join(missing)}")
    observations = []
    for line in secs[HEAD_OBS].splitlines():
        if line.strip() and (o := _parse_observation(line)) is not None:
            observations.append(o)
    concl = secs[HEAD_CONCL]
    # The label is the known label mentioned first in the conclusion; longer labels
    # first in a tie so "contempt" is not matched inside a longer word.
    hits = []
    for lab in labels:
        m = re.search(rf"\b{re.escape(lab)}\b", concl, re.I)
        if m:
            hits.append((m.start(), -len(lab), lab))
    if not hits:
        raise ParseError(f"the conclusion names none of the labels {labels}")
    label = min(hits)[2]
    conf = 0.0
    if m := _CONF_RE.search(concl):
        conf = float(m.group(1)) / (100.0 if m.group(2) or float(m.group(1)) > 1 else 1.0)
    val = float(m.group(1)) if (m := _VAL_RE.search(concl)) else 0.0
    aro = float(m.group(1)) if (m := _ARO_RE.search(concl)) else 0.0
    caption = secs.get(HEAD_CAPTION, "")
    if not caption:
        # A caption without its header: the FEC-Bench opening phrase marks it.
        m = re.search(r"At the (?:beginning|start)\b.*", text, re.I | re.S)
        caption = m.group(0).strip() if m else ""
    return Explanation(
        track_id=track_id,
        key_observations=observations,
        interpretation=secs.get(HEAD_INTERP, ""),
        conclusion=Conclusion(label=label, confidence=_clip(conf, 0, 1), valence=_clip(val, -1, 1),
                              arousal=_clip(aro, -1, 1)),
        caption=caption,
    )
