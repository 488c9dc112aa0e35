"""Follow-up answers as the user reads them.

`times_in` finds the times a question names; `fallback_answer` is the rules' answer
where the model gave no usable record (the baseline finetune/followups.py scores a
model against); `answer_of` renders a finished answer task (agent/render.py writes
the text).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, NamedTuple

import prompts
from agent import render
from agent.decision import Answer

if TYPE_CHECKING:
    from agent.evidence import FaceFacts
    from agent.graph import Task

_TIME_RE = re.compile(
    r"(?:\bsecond\s+|\bsec\.?\s+|\bat\s+)(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:s\b|secs?\b|seconds?\b)", re.I)


# "from 1.1 to 2.9 s", "between 2 and 5 seconds": the first number has no unit of its own
_RANGE_RE = re.compile(r"\b(?:from|between)\s+(\d+(?:\.\d+)?)\s*(?:s\b|secs?\b|seconds?\b)?\s*"
                       r"(?:to|and|-)\s*(\d+(?:\.\d+)?)\s*(?:s\b|secs?\b|seconds?\b)", re.I)


def times_in(text: str) -> list[float]:
    """Times in seconds mentioned in a question, in reading order ("second 7", "at 3 s",
    "2.5 seconds", "from 1.1 to 2.9 s")."""
    found = [(m.start(i), float(m.group(i))) for m in _RANGE_RE.finditer(text) for i in (1, 2)]
    found += [(m.start(), float(m.group(1) or m.group(2))) for m in _TIME_RE.finditer(text)]
    out: list[float] = []
    for _, v in sorted(found):
        if v not in out:
            out.append(v)
    return out


# "Why not fear?", "why isn't she afraid?": a question about a reading set aside.
WHY_NOT = re.compile(r"\bwhy\b.*\b(?:not|isn'?t|aren'?t|wasn'?t|doesn'?t|no)\b", re.I)
# "When does she stop crying?", "when is the smile over?": where a reading ends. The
# lexicon reads "stop crying" as a negated emotion, which is right for a claim and wrong
# for this question: it asks about crying, not about what is not crying.
ENDS = re.compile(r"\bwhen\b.*\b(?:stops?|ends?|finish(?:es)?|ceases?|no longer|over)\b", re.I)


# "When does she stop crying?", "at what time is he smiling?": a question about when one
# reading starts or ends.
WHEN = re.compile(r"\bwhen\b|\bat what time\b|\bwhat time\b", re.I)


def asked_when(question: str, present: set[str]) -> str | None:
    """The one emotion a "when" question asks about, where the face shows it: the answer
    names that reading (the negation of "stop crying" aside, it asks about crying). SFT v8
    answered "When does she stop crying?" with the laughter from 9.5 s, naming happiness."""
    return _one_reading(question, present) if WHEN.search(question) else None


def asked_about(question: str, present: set[str]) -> str | None:
    """The one emotion a question is about, where the face shows it: that of a "when"
    question (`asked_when`), or of any question that names one reading and no time and
    does not ask "why not" (those answer with what held instead). SFT v8 answered "Are her
    lips pressed while she cries?" with the laughter from 9.5 s. A question about a time
    is answered from that moment, whatever it reads as."""
    if WHEN.search(question):
        return asked_when(question, present)
    if times_in(question) or WHY_NOT.search(question):
        return None
    return _one_reading(question, present)


# "Why happiness?", "what makes you say sadness?": the reasons for one reading.
WHY = re.compile(r"\bwhy\b|\bwhat makes you say\b", re.I)


def asked_absent(question: str, present: set[str]) -> str | None:
    """The one emotion a question names that no stretch of the face reads as ("Does she look
    angry at any point?", "When does he start crying?" on a face that never cries), where
    the question names no time and asks no "why" (a "why not" has its own rule in
    `fallback_answer`; a "why" asks the reasons for the reading given). SFT v8 answered
    "Does she look angry at any point?" on WolfgangLanger_Pexels.mp4 with the record label
    anger and three brow and cheek events; the rules answered with her laughter, as if
    nothing had been asked."""
    if times_in(question) or WHY.search(question):
        return None
    named = _named(question)
    return next(iter(named)) if len(named) == 1 and not named & present else None


def never_note(asked: str, held: str) -> str:
    """The sentence for a reading no stretch of the face shows: which reading holds longest
    instead (prompts/render.yaml `answer_why_not_never`)."""
    return prompts.fill(prompts.load_yaml("render")["answer_why_not_never"], asked=asked,
                        Asked=asked.capitalize(), held=held)


def longest_segment(f: FaceFacts) -> str | None:
    """The id of the face's longest stretch (None without segments): what "holds longest"."""
    return max(f.segments, key=lambda i: f.segments[i].end - f.segments[i].start, default=None)


def absent_answer(f: FaceFacts, asked: str) -> Answer:
    """The answer about a reading (`asked`, answers.asked_absent) no stretch of face `f`
    shows: no label, `never_note`, and the longest stretch. The rules give it, the chat's
    schema admits it (agent.decision.absent_schema) and the training targets teach it."""
    held = longest_segment(f)
    return Answer(ref=[held], label=None, note=never_note(asked, f.segments[held].label))


def asked_why(question: str, present: set[str]) -> str | None:
    """The one emotion a "why" question (not "why not") asks the reasons for, where the face
    shows it: the answer rests on that reading's own pattern. SFT v8 answered "Why
    happiness?" on WolfgangLanger_Pexels.mp4 with AU01, AU09 and AU23, from the crying."""
    return _one_reading(question, present) if WHY.search(question) and not WHY_NOT.search(question) \
        else None


def _named(question: str) -> set[str]:
    """The emotions a question names, negated or not."""
    from agent.faithfulness import emotion_mentions

    return {lab for _, lab, _ in emotion_mentions(question)}


def _one_reading(question: str, present: set[str]) -> str | None:
    """The one emotion the question names (negated or not), if the face shows it."""
    named = _named(question)
    return next(iter(named)) if len(named) == 1 and named <= present else None


# A moment whose leading reading has less probability than this is not said to "look
# angry there": WolfgangLanger_Pexels.mp4 at 7 s (her hand over her face, between the
# crying and the laughter) reads disgust at p=0.31, and v8 answered "The person looks
# disgusted there." Such a moment gets a sentence that says the reading is weak.
WEAK_READING = 0.4


def moment_remarks(label: str, weak: bool) -> list[str]:
    """The sentences for a moment that reads as `label` (prompts/notes.yaml, `answer`): the
    label's own, or where that reading is weak (`weak_readings`), those saying so. The
    training targets (finetune/data/targets.py) and the answer schema (`answer_remarks`)
    both take them from here."""
    bank = prompts.load_yaml("notes")["answer"]
    return list(bank["weak"] if weak else bank["moment"].get(label, []))


def weak_readings(results: list[dict]) -> set[str]:
    """The labels that lead a tool result's window only weakly (below WEAK_READING)."""
    return {r["label"] for r in results
            if r.get("label") and r.get("emotions", {}).get(r["label"], 0.0) < WEAK_READING}


def answer_remarks(question: str, labels: list[str], weak: set[str] = frozenset()) -> dict[str | None, list[str]]:
    """The sentences an answer's note is chosen among (prompts/notes.yaml, `answer`), by the
    label the answer names (None: it names none); for a label in `weak` (`weak_readings`)
    the moment sentences say the reading is weak. SFT v8 answered "Is the person smiling at
    2 s?" with "Smiling rather than looking on the side of the face." in free text."""
    notes = prompts.load_yaml("notes")
    verbs, bank = notes["verbs"], notes["answer"]
    named = _named(question)
    out: dict[str | None, list[str]] = {None: list(bank["absent"])}
    for lab in labels:
        yes = verbs.get(lab, [lab])[0]
        out[lab] = [*moment_remarks(lab, lab in weak),
                    *(prompts.fill(c, yes=yes, no=verbs[x][0], Yes=yes[:1].upper() + yes[1:])
                      for x in sorted(named - {lab}) if x in verbs for c in bank["choice"])]
    return out


def fallback_answer(task: Task, question: str) -> Answer:
    """A rule-based answer when the model gave none: the two moments asked about compared,
    else the one moment, else, for a reading the face never shows, a sentence saying so and
    what held longest, else, for "when does X stop?", the last stretch of X, else, for
    "why not X?", where X was seen and what held longest, else the segment of an emotion
    the question names, else the face's longest segment."""
    from agent.decision import ToolRequest
    from agent.faithfulness import emotion_mentions

    f = task.facts
    asked = times_in(question)
    if len(asked) >= 2:  # "compare second 2 and 8", "between 3 s and 12 s"
        r = task.toolbox.run(ToolRequest(tool="compare_moments", args={"t1": asked[0], "t2": asked[1]}))
        return Answer(ref=[r["id"]] if "id" in r else [], label=None)
    if asked:
        r = task.toolbox.run(ToolRequest(tool="moment", args={"t": asked[0]}))
        return Answer(ref=[r["id"]] if "id" in r else [], label=r.get("label"))
    longest = longest_segment(f)
    absent = asked_absent(question, {s.label for s in f.segments.values()})
    if absent and longest is not None:  # "Does she look angry?" on a face that never does
        return absent_answer(f, absent)
    why_not, ends = WHY_NOT.search(question), ENDS.search(question)
    for _, lab, neg in emotion_mentions(question):
        segs = [i for i, s in f.segments.items() if s.label == lab]  # in time order
        if ends and segs:  # the last stretch of that reading; answer_of says where it ends
            return Answer(ref=segs[-1:], label=lab)
        if why_not and neg and longest is not None and f.segments[longest].label != lab:
            # "Why not fear?": where that reading was seen, and what held longest instead.
            held = f.segments[longest].label
            note = prompts.fill(prompts.load_yaml("render")["answer_why_not_brief"], asked=lab,
                                Asked=lab.capitalize(), held=held) if segs else never_note(lab, held)
            return Answer(ref=[*segs[:2], longest], label=held, note=note)
        if segs and not neg:
            return Answer(ref=segs[:2], label=lab)
    if longest is not None:
        return Answer(ref=[longest], label=f.segments[longest].label)
    return Answer(ref=[], label=None)


class Answered(NamedTuple):
    """A finished answer task as the user reads it: the text, what was withheld, the times it
    cites, the record it was rendered from (the rules' where the model's was unusable) and
    whether that was a fallback."""

    text: str
    withheld: list[str]
    times: list[float]
    record: Answer
    fallback: bool


def answer_of(task: Task, question: str, seed: int = 0) -> Answered:
    """The rendered answer of a finished answer task."""
    a, track = task.analysis, task.analysis.track(task.track_id)
    record, fallback = task.record, False
    if not isinstance(record, Answer):
        record, fallback = fallback_answer(task, question), True
    segs = task.facts.segments
    if ENDS.search(question) and not record.note and record.ref and record.ref[0] in segs \
            and segs[record.ref[0]].label == record.label:
        # "When does she stop crying?" answered with a stretch of crying (by the model or
        # the rules): say where it ends (the record names the stretch, this its end)
        record = record.model_copy(update={"note": prompts.fill(
            prompts.load_yaml("render")["answer_ends"], asked=record.label,
            end=f"{segs[record.ref[0]].end:.1f}")})
    text, withheld, times = render.answer(a, track, record, task.toolbox.results, seed=seed)
    return Answered(text, withheld, times, record, fallback)
