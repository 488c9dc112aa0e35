"""Reward functions for GRPO, in TRL's form: `reward(completions, **columns) -> list[float]`.

Each function is pure: it reads the model's completions (the JSON decision
record as a string, or TRL's conversational form, a list of messages whose
last assistant turn is the record) and dataset columns of the same length,
and returns one float per completion. None means "no opinion" to TRL; we
never return it, so a missing column is an error, not a silent zero.

Columns (written by finetune/data/builder.py):
    analysis       the Analysis JSON of the clip (the record's ids are checked against it)
    track_id       the face the record is about
    label          the true conclusion label of the face
    aus            AU codes that belong to the true expression(s)
    segment_order  the true order of emotion segments, e.g. [neutral, happiness]

What counts as a valid record and as a faithful one is defined once, in the
agent: agent.decision.parse_decision (ids of this face, a known label) and
agent.faithfulness.check_words (the model's own words). The caption is the
one the user would read, rendered by agent/render.py from the record.

The recipe follows Facial-R1 (2025, "Facial-R1: Aligning Reasoning and Recognition
for Facial Emotion Analysis"): a format reward, a label reward and an AU
reward 2*F1 - 1 over cited vs. true AUs (-1 when none is cited, as in its
released reward code), to which we add a faithfulness penalty and a
caption-order score for the time-ordered caption.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from agent import evidence as ev
from agent import faithfulness, render
from agent.decision import Decision, RecordError, parse_decision, parse_turn
from agent.schema import au_code
from evals.metrics import lcs_pairs
from tools.analysis import Analysis, Track
from tools.errors import FaceReasonError

Completion = str | list[dict[str, Any]]

_AU_RE = re.compile(r"\bAU\s?0?(\d{1,2})\b", re.I)


def completion_text(completion: Completion) -> str:
    """The answer text of one completion (the last assistant turn if conversational)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content") or "")
    texts = [m.get("content") or "" for m in completion if m.get("role", "assistant") == "assistant"]
    return str(texts[-1]) if texts else ""


class RewardColumnError(FaceReasonError, ValueError):
    """A reward was called without the dataset column it scores against."""

    code = "bad_reward_columns"


def _need(name: str, value: Sequence | None, n: int) -> Sequence:
    if value is None:
        raise RewardColumnError(f"the reward needs the dataset column '{name}'")
    if len(value) != n:
        raise RewardColumnError(f"column '{name}' has {len(value)} rows for {n} completions")
    return value


def _codes(items) -> set[str]:
    out = set()
    for x in items or []:
        m = _AU_RE.search(str(x))
        if m:
            out.add(au_code(m.group(1)))
    return out


@functools.lru_cache(maxsize=256)
def _face(analysis_json: str, track_id: int) -> tuple[Analysis, Track, ev.FaceFacts]:
    a = Analysis.from_json(analysis_json)
    t = a.track(int(track_id))
    return a, t, ev.facts(a, t)


def decision_of(completion: Completion, analysis_json: str, track_id: int) -> Decision | None:
    """The completion's Decision if it is a valid record for this face, else None."""
    a, _, f = _face(analysis_json, track_id)
    try:
        return parse_decision(completion_text(completion), f, a.emotion_labels)
    except RecordError:
        return None


def _decisions(completions, analysis, track_id) -> list[Decision | None]:
    n = len(completions)
    rows = zip(completions, _need("analysis", analysis, n), _need("track_id", track_id, n), strict=True)
    return [decision_of(c, a, t) for c, a, t in rows]


def cited_aus(d: Decision | None, analysis_json: str, track_id: int) -> set[str]:
    """AU codes of the events a decision cites (its Key Observations)."""
    if d is None:
        return set()
    f = _face(analysis_json, track_id)[2]
    return {f.events[i].au for i in d.cite}


# ------------------------------------------------------------------------- rewards
def format_reward(completions: list[Completion], analysis: Sequence[str] | None = None,
                  track_id: Sequence[int] | None = None, **_: Any) -> list[float]:
    """1.0 for a valid decision record of this face; 0.25 for a JSON object that is not
    one (wrong ids, a field missing); 0 otherwise. Range [0, 1]."""
    out = []
    for c, d in zip(completions, _decisions(completions, analysis, track_id), strict=True):
        if d is not None:
            out.append(1.0)
            continue
        try:
            parse_turn(completion_text(c))
            out.append(0.25)
        except RecordError:
            out.append(0.0)
    return out


def label_reward(completions: list[Completion], label: Sequence[str] | None = None,
                 analysis: Sequence[str] | None = None, track_id: Sequence[int] | None = None,
                 **_: Any) -> list[float]:
    """1.0 when the record's label equals the true `label` (case-insensitive), else 0.0.

    Range [0, 1]. A completion that is not a valid record scores 0.
    """
    labels = _need("label", label, len(completions))
    return [float(d is not None and d.label.lower() == str(t).lower())
            for d, t in zip(_decisions(completions, analysis, track_id), labels, strict=True)]


def au_reward(completions: list[Completion], aus: Sequence[Sequence[str]] | None = None,
              analysis: Sequence[str] | None = None, track_id: Sequence[int] | None = None,
              **_: Any) -> list[float]:
    """2 * F1 - 1 of the cited events' AUs against the true `aus`; -1 when none is cited.

    Range [-1, 1]. F1 over sets of AU codes. When the truth has no AU (a neutral face),
    citing none is correct: 1 if the record cites none, -1 if it cites any or is invalid.
    """
    n = len(completions)
    truth_rows = _need("aus", aus, n)
    out = []
    for d, truth, a, t in zip(_decisions(completions, analysis, track_id), truth_rows,
                              analysis, track_id, strict=True):
        cited = cited_aus(d, a, t)
        true = _codes(truth)
        if not true:
            out.append(1.0 if d is not None and not cited else -1.0)
            continue
        if not cited:
            out.append(-1.0)
            continue
        tp = len(cited & true)
        f1 = 0.0 if tp == 0 else 2 * tp / (len(cited) + len(true))
        out.append(2 * f1 - 1)
    return out


def faithfulness_reward(completions: list[Completion], analysis: Sequence[str] | None = None,
                        track_id: Sequence[int] | None = None, **_: Any) -> list[float]:
    """-1 when the record's own words (its note) fail agent.faithfulness.check_note for this
    face, else 0 (an empty note, or a valid one). Range [-1, 0]: a penalty only, so it never
    pays to say nothing; an invalid record scores 0 here (format_reward handles it)."""
    out = []
    for d, a, t in zip(_decisions(completions, analysis, track_id), analysis, track_id, strict=True):
        if d is None or not d.note:
            out.append(0.0)
            continue
        an, track, _ = _face(a, t)
        bad = faithfulness.check_note(d.note, an, track, allowed_labels={d.label})
        out.append(-1.0 if bad else 0.0)
    return out


def caption_emotions(caption: str) -> list[str]:
    """The emotion labels a caption asserts, in reading order, repeats collapsed (the
    lexicon and negation rules of agent.faithfulness.emotion_mentions)."""
    return collapse([lab for _, lab, negated in faithfulness.emotion_mentions(caption) if not negated])


def collapse(labels: Sequence[str]) -> list[str]:
    """A label sequence with consecutive repeats told once."""
    out: list[str] = []
    for x in labels:
        if not out or out[-1] != x:
            out.append(x)
    return out


def order_score(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """|LCS| / max(len) of two label sequences (repeats collapsed); 1.0 when both are empty."""
    a, b = collapse([str(x).lower() for x in predicted]), collapse([str(x).lower() for x in truth])
    if not a and not b:
        return 1.0
    matches = {(i, j) for i, x in enumerate(a) for j, y in enumerate(b) if x == y}
    return len(lcs_pairs(len(a), len(b), matches)) / max(len(a), len(b))


def caption_order_reward(completions: list[Completion],
                         segment_order: Sequence[Sequence[str]] | None = None,
                         analysis: Sequence[str] | None = None, track_id: Sequence[int] | None = None,
                         **_: Any) -> list[float]:
    """How well the rendered caption's emotion sequence follows the true segment order.

    Range [0, 1]: |LCS| / max(length) of the emotions the caption names
    (`caption_emotions`, on the caption agent/render.py writes from the record) and
    `segment_order`, consecutive repeats collapsed. 0 for an invalid record.
    """
    rows = _need("segment_order", segment_order, len(completions))
    out = []
    for d, truth, a, t in zip(_decisions(completions, analysis, track_id), rows, analysis, track_id,
                              strict=True):
        if d is None:
            out.append(0.0)
            continue
        an, track, _ = _face(a, t)
        caption = render.explanation(an, track, d).caption
        out.append(order_score(caption_emotions(caption), list(truth)))
    return out


# The GRPO recipe's reward functions and default weights (configs may override them).
REWARDS = {
    "format": format_reward,
    "label": label_reward,
    "au": au_reward,
    "faithfulness": faithfulness_reward,
    "caption_order": caption_order_reward,
}
DEFAULT_WEIGHTS = {"format": 0.5, "label": 1.0, "au": 0.5, "faithfulness": 1.0, "caption_order": 0.5}


def get(names: Sequence[str]) -> list:
    """The reward functions named, in order; a clear error for an unknown name."""
    unknown = [n for n in names if n not in REWARDS]
    if unknown:
        raise RewardColumnError(f"unknown reward(s) {unknown}; known: {sorted(REWARDS)}")
    return [REWARDS[n] for n in names]
