"""What one caption clause asserts about a face, and when two assertions cannot both hold.

The offline judge (evals/judges.py) reads every clause into a `Reading`:

    who        "female" / "male" / None (anyone), from prompts/judge_offline_rules.yaml
    when       the parts of the video it may be about (0 start, 1 middle, 2 end)
    aus        Action Units it asserts, from the phrases in prompts/facial_actions.yaml
    labels     emotion labels it asserts, from prompts/emotion_lexicon.yaml
    not_*      AUs and labels it negates ("no longer smiling", "without a smile")
    valence    the signs of affect it asserts (labels, affect words, AU valence from
               prompts/au_cues.yaml)
    intensity  "low" / "high" / None

`conflict(a, b)` says why two readings about the same person and moment cannot
both be true: opposite valence, a neutral face against an emotion, opposite
movements of one facial region, or one side negating what the other asserts.
`blocks(a, b)` says why they do not entail each other although they may both
hold (different emotions of one valence, different AUs, a faint against a broad
expression). Negation scope and the emotion vocabulary are agent.faithfulness's
(one reader of emotion_lexicon.yaml for the whole project).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import prompts
from agent import faithfulness

PHASES = (0, 1, 2)  # start, middle, end
ALL = frozenset(PHASES)


@dataclass(frozen=True)
class Reading:
    who: str | None = None
    when: frozenset[int] = ALL
    aus: frozenset[str] = frozenset()
    not_aus: frozenset[str] = frozenset()
    labels: frozenset[str] = frozenset()
    not_labels: frozenset[str] = frozenset()
    valence: frozenset[int] = frozenset()
    intensity: str | None = None

    @property
    def content(self) -> frozenset[str]:
        """What the clause asserts about the face: AUs and emotion labels."""
        return self.aus | self.labels

    @property
    def facial(self) -> bool:
        return bool(self.content or self.not_aus or self.not_labels or self.valence)


def _word(w: str) -> re.Pattern:
    """A word or phrase as a whole word (apostrophes and hyphens count as letters)."""
    return re.compile(rf"(?<![a-z']){re.escape(w)}(?![a-z'])")


@functools.cache
def _tables() -> dict:
    acts = faithfulness.action_table()[1]
    opposites = [(o["region"], frozenset(o["a"]), frozenset(o["b"])) for o in acts["opposites"]]
    lex = prompts.load_yaml("emotion_lexicon")
    cues = prompts.load_yaml("au_cues")
    au_valence = {au: int(v.get("valence", 0)) for au, v in cues.items() if isinstance(v, dict)}
    affect = [(_word(w), 1 if sign == "positive" else -1)
              for sign, words in lex["affect_words"].items() for w in words]
    intensity = [(_word(w), level)
                 for level, words in lex["intensity"].items() for w in words]
    rules = prompts.load_yaml("judge_offline_rules")
    gender = {w: g for g, ws in rules["person_nouns"].items() if g != "any" for w in ws}
    gender |= {w: g for g, ws in rules["pronoun_gender"].items() for w in ws}
    return {"opposites": opposites, "au_valence": au_valence, "affect": affect,
            "intensity": intensity, "gender": gender, "valence": faithfulness.lexicon()[1]}


def read(text: str, when: frozenset[int] = ALL) -> Reading:
    """The Reading of one clause (lower-cased text, temporal markers already removed)."""
    t = _tables()
    low = text.lower()
    aus, not_aus, labels, not_labels, valence = set(), set(), set(), set(), set()
    for _, lab, negated in faithfulness.emotion_mentions(low):
        (not_labels if negated else labels).add(lab)
        v = t["valence"].get(lab, 0)
        if v and not negated:
            valence.add(v)
    for _, _, asserted, denied, negated in faithfulness.action_mentions(low):
        if negated:
            not_aus.update(asserted)
        else:
            aus.update(asserted)
            not_aus.update(denied)
    for pat, sign in t["affect"]:
        m = pat.search(low)
        if m and not faithfulness.negated_at(low, m.start(), m.end()):
            valence.add(sign)
    valence.update(v for au in aus if (v := t["au_valence"].get(au, 0)))
    levels = {level for pat, level in t["intensity"] if pat.search(low)}
    who = next((t["gender"][w] for w in re.findall(r"[a-z]+", low) if w in t["gender"]), None)
    return Reading(who=who, when=frozenset(when), aus=frozenset(aus), not_aus=frozenset(not_aus - aus),
                   labels=frozenset(labels), not_labels=frozenset(not_labels - labels),
                   valence=frozenset(valence), intensity=levels.pop() if len(levels) == 1 else None)


def same_scene(a: Reading, b: Reading) -> bool:
    """Whether the two can be about one person at one moment."""
    return (a.who is None or b.who is None or a.who == b.who) and bool(a.when & b.when)


def conflict(a: Reading, b: Reading) -> str | None:
    """Why a and b, about one person at one moment, cannot both hold; None if they can."""
    if len(a.valence) == 1 and len(b.valence) == 1 and a.valence != b.valence:
        return "opposite emotions"
    for x, y in ((a, b), (b, a)):
        if "neutral" in x.labels and (y.labels - {"neutral"} or y.valence) and not (x.valence or "neutral" in y.labels):
            return "a neutral face against an emotion"
    for region, up, down in _tables()["opposites"]:
        if (a.aus & up and b.aus & down and not a.aus & down and not b.aus & up) or (
                a.aus & down and b.aus & up and not a.aus & up and not b.aus & down):
            return f"opposite {region} movements"
    if a.not_aus & b.aus or b.not_aus & a.aus or a.not_labels & b.labels or b.not_labels & a.labels:
        return "one side negates what the other asserts"
    return None


def blocks(a: Reading, b: Reading) -> str | None:
    """Why b, though it may hold with a, does not say what a says; None if nothing blocks."""
    if a.content and not b.content:
        return "the other says nothing about this expression"
    if a.labels and b.labels and not a.labels & b.labels:
        return "different emotions"
    if a.aus and b.aus and not a.content & b.content:
        return "different facial actions"
    if a.intensity and b.intensity and a.intensity != b.intensity and a.content & b.content:
        return "different intensity"
    return None


def entails_by_lexicon(event: Reading, clause: Reading) -> bool:
    """The clause says what the event says about the face (through the lexicon, not wording).

    Either they share an AU or an emotion label, or the event only denies an
    expression whose valence is the opposite of what the clause shows ("stops
    crying" against "laughs").
    """
    if event.content:
        return bool(event.content & clause.content)
    if event.not_labels and len(clause.valence) == 1:
        denied = {v for lab in event.not_labels if (v := _tables()["valence"].get(lab, 0))}
        return bool(denied) and denied.isdisjoint(clause.valence)
    return False
