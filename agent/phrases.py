"""The words rendered text is made of: seeded choices from the phrase banks in prompts/
(render.yaml, au_cues.yaml, emotion_phrases.yaml) and the number formats. agent/render.py
decides what is said; this module only says how."""

from __future__ import annotations

import random

import prompts
from tools.analysis import Analysis, Track
from tools.facs import AU_NAMES


def num(x: float) -> str:
    """A time or intensity as the text gives it: one decimal."""
    return f"{x:.1f}"


def sentence(text: str) -> str:
    """`text` with its first letter capitalised."""
    text = text.strip()
    return text[0].upper() + text[1:] if text else text


def spans_text(spans: list[tuple[float, float]]) -> str:
    """Up to three time spans, "2.5 s, 2.9-3.1 s" (a span under 0.05 s is a moment)."""
    return ", ".join(f"{num(a)} s" if b - a < 0.05 else f"{num(a)}-{num(b)} s" for a, b in spans[:3])


class Phrases:
    """One face's phrase bank: prompts/render.yaml, au_cues.yaml and emotion_phrases.yaml,
    each slot a seeded choice (the same seed and face give the same words)."""


    def __init__(self, analysis: Analysis, track: Track, seed: int):
        self.a, self.t = analysis, track
        self.rng = random.Random(f"{seed}:{track.track_id}")
        self.p = prompts.load_yaml("render")
        self.cues = prompts.load_yaml("au_cues")
        self.emos = prompts.load_yaml("emotion_phrases")
        self.subject = (self.rng.choice(self.p["subject"]) if len(analysis.tracks) <= 1
                        else prompts.fill(self.rng.choice(self.p["subject_face"]), track=track.track_id))

    def pick(self, key: str, **kw) -> str:
        """A phrase of prompts/render.yaml (a seeded choice where the slot has several)."""
        bank = self.p[key]
        return prompts.fill(bank if isinstance(bank, str) else self.rng.choice(bank), **kw)

    one = pick

    def state(self, label: str) -> str:
        """A phrase for the label's look, not the one used just before (if the bank has more)."""
        bank = self.emos.get(label) or self.emos["_default"]
        options = [p for p in bank["state"] if p != getattr(self, "_last_state", None)] or bank["state"]
        self._last_state = self.rng.choice(options)
        return prompts.fill(self._last_state, label=label)

    def suggests(self, au: str, label: str) -> str:
        cue = self.cues.get(au)
        if not cue:
            return "a facial movement"
        return cue["suggests"].get(label) or cue["suggests"]["default"]

    def action(self, au: str) -> str:
        cue = self.cues.get(au)
        return self.rng.choice(cue["action"]) if cue else f"{AU_NAMES.get(au, au)} activates"

    def listing(self, items: list[str]) -> str:
        if len(items) <= 1:
            return "".join(items)
        return ", ".join(items[:-1]) + f" {self.p['and_word']} " + items[-1]
