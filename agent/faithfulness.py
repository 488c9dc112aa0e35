"""Faithfulness: what a text claims about a face must be what the `Analysis` measured.

One definition, used by the agent (the model's own words are shown only if they
pass), by the GRPO rewards and by the evaluation table. `check_words` reads
free text (a model's note or chat sentence, or a whole prose interpretation);
each violation is one sentence:

- an AU code must be observed for the face (in the span the text is about,
  when one is given), unless its clause negates it ("no AU04");
- an AU code must not be given another AU's FACS name ("AU23 (lip corner puller)");
- an AU with a clear affective direction must not be given the opposite one
  ("AU12 suggests an unhappy mouth"; prompts/au_cues.yaml `valence`), unless
  the emotion's EMFACS prototypes contain it (AU12 in contempt);
- a Duchenne smile needs AU06 with AU12, not another pairing;
- an intensity cited for an AU must not exceed its measured peak by more
  than `INTENSITY_SLACK`;
- a facial movement described in words (prompts/facial_actions.yaml: "the
  lip corners draw upward", "her brows knit") must be observed as one of its
  AUs, as a code must;
- an emotion the text asserts (prompts/emotion_lexicon.yaml, negation
  aware) must be among the face's segments in that span, or be the label the
  record decided;
- a time "at N s" must lie inside the face's time span.

`check(explanation, analysis)` applies the same rules to a whole Explanation
(key observations included), e.g. one parsed from another model's prose.
"""

from __future__ import annotations

import functools
import re

import prompts
from agent import evidence as ev
from agent.schema import Explanation, au_code
from tools.analysis import Analysis, Track
from tools.facs import AU_NAMES

INTENSITY_SLACK = 1.0  # FACS intensity points a claim may exceed the measured peak by
_AU = re.compile(r"\bAU\s?0?(\d{1,2})\b", re.I)
_TIME = re.compile(r"\bat\s+(?:about\s+|around\s+)?(\d+(?:\.\d+)?)\s*(?:s\b|sec)", re.I)
# The value may not be part of a word: in "AU43 (eyes closed) and AU04" the 4 of AU04 is
# no intensity of AU43.
_AU_VALUE = re.compile(r"\bAU\s?0?(\d{1,2})\b[^.;]{0,24}?(?:intensity|peak|of|at|=|:)?\s*"
                       r"(?<![\w.])(\d(?:\.\d+)?)(?!\s*(?:s\b|sec|-|–))", re.I)


@functools.cache
def lexicon() -> tuple[list[tuple[str, str]], dict[str, int], list[str], list[str]]:
    """(phrase, label) pairs longest first, label valences, negators and negators that follow
    the emotion ("... was ruled out"), from prompts/emotion_lexicon.yaml plus the
    renderer's state phrases."""
    data = prompts.load_yaml("emotion_lexicon")
    pairs = {(w.lower(), lab) for lab, v in data["labels"].items() for w in v["words"]}
    for lab, bank in prompts.load_yaml("emotion_phrases").items():
        if not lab.startswith("_"):
            pairs |= {(phrase.lower(), lab) for phrase in bank.get("state", [])}
    valence = {lab: int(v.get("valence", 0)) for lab, v in data["labels"].items()}
    return (sorted(pairs, key=lambda p: (-len(p[0]), p[0])), valence, list(data["negators"]),
            list(data["post_negators"]))


def _has(words: list[str], text: str) -> bool:
    # "n't" is glued to its verb ("doesn't"), every other negator is a word of its own
    return any(re.search(("" if n == "n't" else r"(?<![a-z'])") + re.escape(n) + r"(?![a-z])", text)
               for n in words)


def negated_at(text: str, start: int, end: int) -> bool:
    """Whether the phrase at text[start:end] is negated in its clause.

    A negator ("not", "no longer", "stops" ...) before it, or a post-negator ("ruled out",
    "fades") after it, in the same clause; a contrast word ("but", "then" ...) ends the
    reach of a negation ("no longer sad but smiling"). Lexicon: prompts/emotion_lexicon.yaml.
    """
    _, _, negators, post = lexicon()
    low = text.lower()
    clause_start = max(low.rfind(c, 0, start) for c in ",;:.!?(") + 1
    ends = [i for i in (low.find(c, end) for c in ",;:.!?)") if i >= 0]
    before, after = low[clause_start:start], low[end:min(ends, default=len(low))]
    before = re.split(r"\b(?:but|yet|while|whereas|then|instead)\b", before)[-1]
    after = re.split(r"\b(?:but|yet|while|whereas|then|instead)\b", after)[0]
    return _has(negators, before) or _has(post, after)


def emotion_mentions(text: str) -> list[tuple[int, str, bool]]:
    """(position, label, negated) for each emotion phrase in `text`, in reading order.

    Longer phrases win over the words inside them; `negated_at` decides negation.
    """
    low = text.lower()
    return [(a, lab, negated_at(low, a, b)) for a, b, lab in _emotion_spans(text)]


def _emotion_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, label) of each emotion phrase in `text`, longest phrases first taken."""
    low = text.lower()
    taken = [False] * len(low)
    hits = []
    for phrase, lab in lexicon()[0]:
        for m in re.finditer(rf"(?<![a-z]){re.escape(phrase)}(?![a-z])", low):
            if not any(taken[m.start():m.end()]):
                taken[m.start():m.end()] = [True] * (m.end() - m.start())
                hits.append((m.start(), m.end(), lab))
    return sorted(hits)


# Words that start a new clause inside a pattern's gap: a conjunction before a new subject
# ("... the eyes and the mouth opens", "opens slightly and the eyes narrow") or a
# subordinator ("while", "as").
_CLAUSE_BREAK = r"(?:and|or)\s+(?:the|her|his|their|its|a)\b|(?:while|whereas|but|as|then)\b"


def _action_pattern(spec: str, gap: int) -> re.Pattern:
    """Compile the small pattern language of prompts/facial_actions.yaml."""
    parts = []
    for tok in spec.split():
        if tok == "~":  # a gap never crosses into the next clause ("eyes and the mouth opens")
            parts.append(rf"(?:(?!{_CLAUSE_BREAK})[a-z'-]+\s+){{0,{gap}}}")
            continue
        alts = [re.escape(a).replace(r"\*", "[a-z'-]*") for a in tok.split("|")]
        parts.append("(?:" + "|".join(alts) + r")\s+")
    body = "".join(parts)
    body = body[: -len(r"\s+")] if body.endswith(r"\s+") else body
    return re.compile(rf"(?<![a-z']){body}(?![a-z'])")


@functools.cache
def action_table() -> tuple[list[tuple[frozenset[str], frozenset[str], list[re.Pattern]]], dict]:
    """(AUs asserted, AUs denied, patterns) per facial-action phrase group, and the raw
    prompts/facial_actions.yaml (its `opposites`, and `or`: other AUs that make a group's
    phrases true, `action_alternatives`)."""
    acts = prompts.load_yaml("facial_actions")
    gap = int(acts.get("gap_words", 3))
    return [(frozenset(a.get("aus", ())), frozenset(a.get("not", ())),
             [_action_pattern(p, gap) for p in a["patterns"]]) for a in acts["actions"]], acts


@functools.cache
def action_alternatives() -> dict[frozenset[str], frozenset[str]]:
    """AUs asserted by a phrase group -> the AUs any of which makes its phrases true."""
    return {frozenset(a.get("aus", ())): frozenset(a.get("aus", ())) | frozenset(a.get("or", ()))
            for a in action_table()[1]["actions"]}


def action_mentions(text: str) -> list[tuple[int, int, frozenset[str], frozenset[str], bool]]:
    """(start, end, AUs asserted, AUs denied, negated) for each facial-action phrase in
    `text` ("the lip corners draw upward", "her brows knit"), lower-cased, in reading order."""
    low = text.lower()
    hits = []
    for asserted, denied, pats in action_table()[0]:
        for pat in pats:
            for m in pat.finditer(low):
                # a negator may sit inside the phrase's gap ("brows do not knit")
                neg = negated_at(low, m.start(), m.end()) or _has(lexicon()[2], m.group(0))
                hits.append((m.start(), m.end(), asserted, denied, neg))
    return sorted(hits, key=lambda h: (h[0], h[1]))


def _clauses(text: str) -> list[str]:
    return [c for c in re.split(r"(?<=[.!?;])\s+|\n+|,\s+(?=but\b|while\b|whereas\b)", text) if c.strip()]


def _negated(clause: str, pos: int) -> bool:
    return _has(lexicon()[2], clause[:pos].lower())


def _peak(analysis: Analysis, track: Track, au: str, scope: tuple[float, float] | None) -> float:
    peaks = [s.peak for s in ev.au_spans(analysis, track) if s.au == au and (
        scope is None or (s.start - ev.TIME_TOLERANCE_S <= scope[1]
                          and s.end + ev.TIME_TOLERANCE_S >= scope[0]))]
    return max(peaks, default=0.0)


# An evidence id (happiness1, AU12a, W1) written into prose: it names nothing a reader can see.
_ID = re.compile(r"\b(?!AU\d{1,2}\b)[A-Za-z]+\d+[a-z]?\b")


def check_note(text: str, analysis: Analysis, track: Track, **kwargs) -> list[str]:
    """`check_words` for the model's own sentence in a record, which must also be a sentence."""
    out = [] if len(re.findall(r"[A-Za-z]+", text)) >= 3 else [f"{text!r} is not a sentence"]
    return out + check_words(text, analysis, track, **kwargs)


def true_remarks(analysis: Analysis, track: Track, labels: list[str]) -> dict[str, list[str]]:
    """For each label, the analyst remarks (prompts/notes.yaml, `decide`) of that label whose
    situation's AUs this face shows and that `check_note` passes: the notes a decision may carry.
    SFT v8 wrote "The dimpled mouth corner ... is the mark of contempt." on contempt faces
    where no AU14 was measured, and the note was withheld; decoded among these, it cannot be."""
    notes = prompts.load_yaml("notes")

    def seen(spec: str) -> bool:
        return any(au in analysis.au_codes and ev.au_observed(analysis, track, au)
                   for au in spec.split("|"))

    out: dict[str, list[str]] = {lab: [] for lab in labels}
    for situation, bank in notes["decide"].items():
        need = notes["situations"][situation]
        if need["label"] in out and all(seen(s) for s in need.get("all", ())) \
                and not any(seen(s) for s in need.get("none", ())):
            out[need["label"]] += [n for n in bank
                                   if not check_note(n, analysis, track, allowed_labels={need["label"]})]
    return out


def check_words(text: str, analysis: Analysis, track: Track, *, allowed_labels: set[str] | None = None,
                scope: tuple[float, float] | None = None, where: str = "") -> list[str]:
    """Violations in free text about one face (see the module docstring)."""
    cues = prompts.load_yaml("au_cues")
    valence = lexicon()[1]
    prefix = f"{where}: " if where else ""
    seg_labels = {s.label for s in ev.segments(analysis, track) if scope is None or (
        s.start - ev.TIME_TOLERANCE_S <= scope[1] and s.end + ev.TIME_TOLERANCE_S >= scope[0])}
    ok_labels = seg_labels | set(allowed_labels or ())
    names = {v: k for k, v in AU_NAMES.items()}
    out: list[str] = [f"{prefix}writes the evidence id {m.group(0)!r} instead of what it shows"
                      for m in _ID.finditer(text)]
    for clause in _clauses(text):
        codes = []
        for m in _AU.finditer(clause):
            code = au_code(m.group(1))
            codes.append(code)
            if _negated(clause, len(clause)):  # "no AU04", "AU04 does not appear"
                continue
            if code not in analysis.au_codes:
                out.append(f"{prefix}{code} is not an Action Unit this analysis measures")
                continue
            start, end = scope if scope else (None, None)
            if not ev.au_observed(analysis, track, code, start, end):
                when = f" at {scope[0]:.1f}-{scope[1]:.1f} s" if scope else ""
                out.append(f"{prefix}cites {code}, which was not observed for face "
                           f"{track.track_id}{when}")
            after = clause[m.end():m.end() + 40].lower()
            for name, other in names.items():
                if other != code and re.match(rf"\s*[(,:-]?\s*(?:the\s+)?{re.escape(name)}\b", after):
                    out.append(f"{prefix}calls {code} '{name}', which is {other}; {code} is the "
                               f"{AU_NAMES.get(code, code)}")
            v = int((cues.get(code) or {}).get("valence", 0))
            # Only a clause about this one AU gives it a meaning ("AU12 suggests an unhappy
            # mouth"); "AU01, AU04 and AU12 point to sadness" weighs several cues together.
            if v and len({au_code(x.group(1)) for x in _AU.finditer(clause)}) == 1:
                for _, lab, neg in emotion_mentions(clause):
                    # EMFACS lists some such AUs in an emotion of the other sign (AU12 in
                    # contempt, R12A+R14A): there the pairing is the table's, not a reversal
                    if not neg and valence.get(lab, 0) == -v and code not in ev.prototype_aus(lab):
                        out.append(f"{prefix}gives {code} ({AU_NAMES.get(code, code)}) the opposite "
                                   f"meaning: it signals {'positive' if v > 0 else 'negative'} "
                                   f"affect, not {lab}")
        if "duchenne" in clause.lower() and not _negated(clause, clause.lower().index("duchenne")):
            # A pairing of AUs named as a Duchenne smile must be AU06 with AU12.
            if len(set(codes)) >= 2 and not {"AU06", "AU12"} <= set(codes):
                out.append(f"{prefix}a Duchenne smile is AU06 with AU12, not "
                           f"{' with '.join(sorted(set(codes)))}")
        for m in _AU_VALUE.finditer(clause):
            code, value = au_code(m.group(1)), float(m.group(2))
            peak = _peak(analysis, track, code, scope)
            if peak and value > peak + INTENSITY_SLACK:
                out.append(f"{prefix}gives {code} intensity {value:.1f}; the measured peak is {peak:.1f}")
        # A movement described in words ("the lip corners draw upward") asserts its AUs as
        # a code does; an emotion word that is also a movement ("smiling") is the emotion
        # rule's, not this one's.
        low, said = clause.lower(), [(a, b) for a, b, *_ in _emotion_spans(clause)]
        for a, b, asserted, _, neg in action_mentions(clause):
            if neg or not asserted or any(x < b and a < y for x, y in said):
                continue
            start, end = scope if scope else (None, None)
            if not any(au in analysis.au_codes and ev.au_observed(analysis, track, au, start, end)
                       for au in action_alternatives().get(asserted, asserted)):
                when = f" at {scope[0]:.1f}-{scope[1]:.1f} s" if scope else ""
                out.append(f"{prefix}says '{low[a:b]}' ({', '.join(sorted(asserted))}), which was "
                           f"not observed for face {track.track_id}{when}")
        for _, lab, neg in emotion_mentions(clause):
            if not neg and lab in analysis.emotion_labels and lab not in ok_labels:
                out.append(f"{prefix}names {lab}, which is not among face {track.track_id}'s "
                           f"emotion segments{' there' if scope else ''}")
        for m in _TIME.finditer(clause):
            t = float(m.group(1))
            if not track.start - ev.TIME_TOLERANCE_S <= t <= track.end + ev.TIME_TOLERANCE_S:
                out.append(f"{prefix}cites {t:g} s, outside face {track.track_id}'s "
                           f"{track.start:.1f}-{track.end:.1f} s")
    return list(dict.fromkeys(out))


def check(explanation: Explanation, analysis: Analysis) -> list[str]:
    """Violations in a whole explanation, one sentence each; [] when every claim was measured."""
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
        peak = _peak(analysis, track, code, (o.start, o.end) if has_span else None)
        if o.intensity > peak + INTENSITY_SLACK:
            out.append(f"key observation: {code} intensity {o.intensity:.1f} overstates the "
                       f"measured peak {peak:.1f}")
        out += check_words(f"{code} ({o.name}): {o.suggests}", analysis, track,
                           allowed_labels={explanation.conclusion.label},
                           scope=(o.start, o.end) if has_span else None,
                           where=f"key observation {code}")
    label = {explanation.conclusion.label}
    out += check_words(explanation.interpretation, analysis, track, allowed_labels=label,
                       where="interpretation")
    out += check_words(explanation.caption, analysis, track, allowed_labels=label, where="caption")
    if explanation.answer:
        out += check_words(explanation.answer, analysis, track, allowed_labels=label, where="answer")
    if explanation.conclusion.label not in analysis.emotion_labels:
        out.append(f"conclusion: '{explanation.conclusion.label}' is not in the label set")
    return list(dict.fromkeys(out))
