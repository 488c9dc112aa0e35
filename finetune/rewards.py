"""Reward functions for GRPO, in TRL's form: `reward(completions, **columns) -> list[float]`.

Each function is pure: it reads the model's completions (plain strings, or
TRL's conversational form, a list of messages whose last assistant turn is
the answer) and dataset columns of the same length, and returns one float per
completion. None means "no opinion" to TRL; we never return it, so a missing
column is an error, not a silent zero.

Columns (written by finetune/data/builder.py):
    label          the true conclusion label of the face
    aus            AU codes that belong to the true expression(s)
    observed_aus   AU codes the measurements show (what the model may cite)
    segment_order  the true order of emotion segments, e.g. [neutral, happiness]

The recipe follows Facial-R1 (2025, "Facial-R1: Aligning Reasoning and Recognition
for Facial Emotion Analysis"): a format
reward, a label reward and an AU reward 2*F1 - 1 over cited vs. true AUs
(-1 when none is cited, as in its released reward code), to which we add a
faithfulness penalty and a caption-order score for the time-ordered caption.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

import prompts
from agent.schema import HEADERS, ParseError, au_code, parse_explanation
from evals.metrics import lcs_pairs
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


def _parse(text: str):
    try:
        return parse_explanation(text)
    except (ParseError, ValueError):
        return None


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


def cited_aus(text: str) -> set[str]:
    """AU codes cited in the Key Observations of an answer (empty if it does not parse)."""
    e = _parse(text)
    return {o.au for o in e.key_observations} if e is not None else set()


# ------------------------------------------------------------------------- rewards
def format_reward(completions: list[Completion], **_: Any) -> list[float]:
    """Layout score in [0, 1]: the share of five checks passed.

    The four headers (**Key Observations:**, **Overall Emotional Interpretation:**,
    **Conclusion:**, **Caption:**) present in that order (one check each; a header
    out of order does not count), and the text parses into an explanation with a
    known label and a non-empty caption (the fifth).
    """
    out = []
    for c in completions:
        text = completion_text(c)
        score, pos = 0, -1
        for h in HEADERS:
            i = text.find(h, pos + 1)
            if i > pos:
                score += 1
                pos = i
        e = _parse(text)
        score += int(e is not None and bool(e.caption.strip()))
        out.append(score / (len(HEADERS) + 1))
    return out


def label_reward(completions: list[Completion], label: Sequence[str] | None = None,
                 **_: Any) -> list[float]:
    """1.0 when the conclusion's label equals the true `label` (case-insensitive), else 0.0.

    Range [0, 1]. An answer that does not parse scores 0.
    """
    labels = _need("label", label, len(completions))
    out = []
    for c, truth in zip(completions, labels, strict=True):
        e = _parse(completion_text(c))
        out.append(float(e is not None and e.conclusion.label.lower() == str(truth).lower()))
    return out


def au_reward(completions: list[Completion], aus: Sequence[Sequence[str]] | None = None,
              **_: Any) -> list[float]:
    """2 * F1 - 1 of the cited AUs against the true `aus`; -1 when no AU is cited.

    Range [-1, 1]. F1 over sets of AU codes (precision = true cited / cited,
    recall = true cited / true). When the truth has no AU (a neutral face), citing
    none is correct: the answer scores 1 if it says no AU rose, -1 if it cites any.
    """
    truth_rows = _need("aus", aus, len(completions))
    out = []
    for c, truth in zip(completions, truth_rows, strict=True):
        cited = cited_aus(completion_text(c))
        true = _codes(truth)
        if not true:
            parsed = _parse(completion_text(c)) is not None
            out.append(1.0 if parsed and not cited else -1.0)
            continue
        if not cited:
            out.append(-1.0)
            continue
        tp = len(cited & true)
        f1 = 0.0 if tp == 0 else 2 * tp / (len(cited) + len(true))
        out.append(2 * f1 - 1)
    return out


def faithfulness_reward(completions: list[Completion],
                        observed_aus: Sequence[Sequence[str]] | None = None,
                        **_: Any) -> list[float]:
    """Minus the share of cited AUs that the measurements do not show.

    Range [-1, 0]: 0 when every cited AU was observed (or none is cited), -1 when
    none of them was. A penalty only, so it never pays to cite less; the AU
    reward takes care of citing too little.
    """
    rows = _need("observed_aus", observed_aus, len(completions))
    out = []
    for c, observed in zip(completions, rows, strict=True):
        cited = cited_aus(completion_text(c))
        if not cited:
            out.append(0.0)
            continue
        out.append(-len(cited - _codes(observed)) / len(cited))
    return out


@functools.cache
def _emotion_lexicon() -> list[tuple[str, str]]:
    """(phrase, label) pairs, longest phrase first, from emotion_words.yaml and the
    engine's state phrases (prompts/emotion_phrases.yaml)."""
    words = yaml.safe_load((Path(__file__).with_name("emotion_words.yaml")).read_text())
    pairs = {(w.lower(), lab) for lab, ws in words.items() for w in ws}
    for lab, bank in prompts.load_yaml("emotion_phrases").items():
        if lab.startswith("_"):
            continue
        for phrase in bank.get("state", []):
            pairs.add((phrase.lower(), lab))
    return sorted(pairs, key=lambda p: (-len(p[0]), p[0]))


def caption_emotions(caption: str) -> list[str]:
    """The emotion labels a caption names, in reading order, repeats collapsed.

    Longer phrases win over the words inside them ("a scornful half-smile" is
    contempt, not a smile).
    """
    text = caption.lower()
    taken = [False] * len(text)
    hits: list[tuple[int, str]] = []
    for phrase, lab in _emotion_lexicon():
        for m in re.finditer(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", text):
            if not any(taken[m.start():m.end()]):
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
                hits.append((m.start(), lab))
    seq: list[str] = []
    for _, lab in sorted(hits):
        if not seq or seq[-1] != lab:
            seq.append(lab)
    return seq


def order_score(predicted: Sequence[str], truth: Sequence[str]) -> float:
    """|LCS| / max(len) of two label sequences (repeats collapsed); 1.0 when both are empty."""
    def collapse(s):
        out = []
        for x in s:
            if not out or out[-1] != x:
                out.append(x)
        return out

    a, b = collapse([str(x).lower() for x in predicted]), collapse([str(x).lower() for x in truth])
    if not a and not b:
        return 1.0
    matches = {(i, j) for i, x in enumerate(a) for j, y in enumerate(b) if x == y}
    return len(lcs_pairs(len(a), len(b), matches)) / max(len(a), len(b))


def caption_order_reward(completions: list[Completion],
                         segment_order: Sequence[Sequence[str]] | None = None,
                         **_: Any) -> list[float]:
    """How well the caption's emotion sequence follows the true segment order.

    Range [0, 1]: |LCS| / max(length) of the caption's emotion sequence
    (`caption_emotions`) and `segment_order`, consecutive repeats collapsed.
    0 when there is no caption.
    """
    rows = _need("segment_order", segment_order, len(completions))
    out = []
    for c, truth in zip(completions, rows, strict=True):
        e = _parse(completion_text(c))
        caption = e.caption if e is not None else ""
        out.append(order_score(caption_emotions(caption), list(truth)) if caption.strip() else 0.0)
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
