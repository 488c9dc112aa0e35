"""What the reasoning model writes: small JSON records, and their per-face JSON schemas.

The model never re-types a measurement. For each face it writes a `Decision`
(explain) or an `Answer` (a follow-up question), citing the ids the evidence
rendering gives segments (happiness1..), events (AU12a..) and tool results (W1.., C1..);
agent/render.py turns a record plus the Analysis into the text a user reads,
so every intensity, time span and segment in it is the measurement.

The schemas are built per face (enums of that face's ids and the active label
set) and enforced while decoding (agent/backends.py); `parse` validates a
reply against the same schema, so a server without structured output gets the
same check after the fact.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

import prompts
from agent.evidence import FaceFacts
from tools.facs import NEUTRAL

MAX_CITE = 5
MAX_ARC = 5
MAX_WHY = 3
NOTE_CHARS = 160  # about 35 tokens: one or two short sentences


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def to_json(self) -> str:
        """Compact JSON, the exact form the model is trained to write."""
        return json.dumps(self.model_dump(), separators=(",", ":"), ensure_ascii=False)


class Decision(_Record):
    """The model's reading of one face.

    The evidence comes first and the label after it: a decoder writes the record in this
    order, so the label is conditioned on the events and the story it has just cited
    (written label-first, the student copied the rule-based reading and cited events
    that contradicted it).
    """

    cite: list[str] = Field(default_factory=list, description="event ids that show the expression")
    arc: list[str] = Field(default_factory=list, description="segment ids of the story, in time order")
    label: str = Field(description="the emotion label, from the active label set")
    conf: float = Field(ge=0.0, le=1.0, description="confidence in the label")
    alt: str | None = Field(None, description="a reading considered and ruled out")
    why: list[str] = Field(default_factory=list, description="event ids that rule `alt` out")
    note: str = Field("", description="at most a sentence or two in the model's own words")


class ToolRequest(_Record):
    """A tool the model asks for before it answers."""

    tool: str
    args: dict[str, Any] = Field(default_factory=dict)


class Answer(_Record):
    """The model's answer to a follow-up question: what it names, then the evidence.

    The label comes first: a question names its emotion ("When does she start
    laughing?"), and the segment ids carry their label (happiness1), so the model picks
    the evidence of the emotion it has named. With the evidence first, SFT v6 named
    happiness and cited the 0.9 s fear flicker on WolfgangLanger_Pexels.mp4."""

    label: str | None = Field(None, description="the emotion the answer names, if any")
    ref: list[str] = Field(default_factory=list, description="ids of the evidence it rests on")
    note: str = Field("", description="one short sentence answering the question")


class RecordError(ValueError):
    """A reply that is not a valid record for this face (bad JSON, unknown id, wrong field)."""


# ------------------------------------------------------------------ schemas
def _ids(ids: list[str], max_items: int) -> dict:
    if not ids:
        return {"type": "array", "maxItems": 0}
    return {"type": "array", "items": {"enum": ids}, "maxItems": max_items}


def _text(max_chars: int) -> dict:
    return {"type": "string", "maxLength": max_chars}


def decision_schema(f: FaceFacts, labels: list[str], notes: dict[str, list[str]] | None = None) -> dict:
    """The record's schema for face `f`: its event ids, the label set, and for the arc the
    segments long enough to tell (`FaceFacts.story_segments`, the engine's and the caption's
    definition): a 0.9 s flicker between two long readings is not a stage of the story.

    With `notes` (label -> the remarks true of this face under that label,
    agent.faithfulness.true_remarks) the note is one of those remarks or empty, chosen after
    the label; without, it is free text that the renderer checks and may withhold."""
    events, segs = list(f.events), f.story_segments()
    arc = _ids(segs, MAX_ARC)
    if segs:
        arc["minItems"] = 1

    cite = _ids(events, MAX_CITE)
    if events:
        # A reading rests on what moved: with events to cite, an empty cite rendered as "no
        # Action Unit is cited" beside AU12 at 5.0 (SFT v7 read single_face.mp4 at 8 fps as
        # happiness citing nothing, its arc missing the smile). Required here, the first
        # id it picks was AU12a, and the arc then told the smile. A neutral reading cites
        # none in training (finetune/data/targets.py); parse_decision still accepts that
        # from a server that ignores the schema. (A schema letting only neutral cite none
        # sent that record to neutral: the grammar keeps the reading the empty list allows.)
        cite["minItems"] = 1

    def obj(label: dict, note: dict) -> dict:
        return {"type": "object", "properties": {
            "cite": cite,
            "arc": arc,
            "label": label,
            "conf": {"type": "number", "minimum": 0, "maximum": 1, "multipleOf": 0.01},
            "alt": {"anyOf": [{"enum": list(labels)}, {"type": "null"}]},
            "why": _ids(events, MAX_WHY),
            "note": note,
        }, "required": ["cite", "arc", "label", "conf", "alt", "why", "note"],
            "additionalProperties": False}

    if notes is None:
        return obj({"enum": list(labels)}, _text(NOTE_CHARS))
    # one branch per label: the branches differ only after the label, so the evidence and
    # the label are decoded as before, and the note among what is true under that label
    return {"anyOf": [obj({"const": lab}, {"enum": ["", *notes.get(lab, [])]}) for lab in labels]}


def _answer_object(label: dict, refs: list[str], notes: list[str] | None = None) -> dict:
    return {"type": "object", "properties": {
        "label": label,
        "ref": _ids(refs, MAX_CITE),
        "note": _text(NOTE_CHARS) if notes is None else {"enum": ["", *notes]},
    }, "required": ["label", "ref", "note"], "additionalProperties": False}


def answer_schema(refs: list[str], labels: list[str], segments: dict[str, str] | None = None,
                  notes: dict[str | None, list[str]] | None = None) -> dict:
    """An answer record citing `refs`. With `segments` (segment id -> its label), an answer
    that names an emotion cites only stretches of that emotion (events and tool results
    stay open to every answer): a happiness answer resting on sadness1 contradicts its own
    evidence. SFT v7 named happiness for "When does she start laughing?" and cited
    sadness1, the first stretch of the clip. With one label and `segments`, the answer names
    that label. With `notes` (label or None -> sentences, answers.answer_remarks), with
    `segments`, the note is one of its label's sentences or empty."""
    if not segments:
        return _answer_object({"anyOf": [{"enum": list(labels)}, {"type": "null"}]}, refs)
    some = notes is not None
    branches = [_answer_object({"const": lab}, [r for r in refs if segments.get(r, lab) == lab],
                               notes.get(lab, []) if some else None) for lab in labels]
    if len(labels) == 1:  # the question names the reading (answers.asked_when): answer about it
        return branches[0]
    return {"anyOf": [*branches, _answer_object({"type": "null"}, refs, notes.get(None, []) if some else None)]}


def lead_with(schema: dict, first: list[str]) -> dict:
    """An answer object's schema whose `ref` starts with one of `first` (a stretch of the
    reading the question asks about): SFT v8 answered "Is she ever afraid?" on
    WolfgangLanger_Pexels.mp4 naming fear and citing only the brow and cheek events it
    cites for everything, none of them inside her two stretches of fear."""
    ref = schema["properties"]["ref"]
    if not first or "items" not in ref:
        return schema
    ref = {**ref, "prefixItems": [{"enum": list(first)}], "minItems": 1}
    return {**schema, "properties": {**schema["properties"], "ref": ref}}


def absent_schema(held: list[str], note: str) -> dict:
    """The answer to a question about a reading no stretch of the face shows
    (answers.asked_absent): it names no reading, says so in `note` (answers.never_note),
    and cites the stretches of what it shows instead (`held`), at least one."""
    return {"type": "object", "properties": {
        "label": {"type": "null"},
        "ref": _ids(held, MAX_CITE) | ({"minItems": 1} if held else {}),
        "note": {"const": note},
    }, "required": ["label", "ref", "note"], "additionalProperties": False}


# Bounds keep a runaway number ("1111...", "6.2626...") out of a tool request: times
# within 10 h to a tenth of a second, face ids below 1,000. An optional face id is left out: a conversation is about one face.
_ARG_TYPES = {"number": {"type": "number", "minimum": 0, "maximum": 36000, "multipleOf": 0.1},
              "integer": {"type": "integer", "minimum": 0, "maximum": 999},
              "string": {"type": "string", "maxLength": 16}}


def _arg_schema(spec: dict) -> dict:
    params = spec.get("parameters", {})
    required = list(params.get("required", []))
    props = {k: dict(_ARG_TYPES.get(v.get("type", "string"), _ARG_TYPES["string"]))
             for k, v in params.get("properties", {}).items() if k in required or k != "track_id"}
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


def _request_schema(tool: str, args: dict) -> dict:
    """{"tool": tool, "args": ...}, args under `args` (an object schema)."""
    return {"type": "object", "properties": {"tool": {"const": tool}, "args": args},
            "required": ["tool", "args"], "additionalProperties": False}


def tool_schema(names: list[str] | None = None) -> dict:
    """A tool request for any of the named tools (default: all in prompts/tools.yaml)."""
    specs = [s for s in prompts.load_yaml("tools") if names is None or s["name"] in names]
    return {"anyOf": [_request_schema(s["name"], _arg_schema(s)) for s in specs]}


def look_schema(times: list[float]) -> dict:
    """The first turn of an answer to a question that names times: a look at those times.

    A segment summary cannot say what the face does at 7 s, so the model must look first;
    it still chooses how and which named time goes where, but cannot invent a time the
    question did not ask about. One time: a look at that moment. Two or more: a comparison
    or a window between them ("how does her face change from 2 to 12 s?" is not a question
    about 2 s alone)."""
    t = {"enum": [round(float(x), 1) for x in times]}
    looks = {"moment": ["t"]} if len(times) < 2 else {"compare_moments": ["t1", "t2"],
                                                      "time_window": ["start", "end"]}
    return {"anyOf": [_request_schema(tool, {"type": "object", "properties": dict.fromkeys(params, t),
                                             "required": params, "additionalProperties": False})
                      for tool, params in looks.items()]}


def turn_schema(final: dict, tools_allowed: bool) -> dict:
    """The schema of one model turn: the final record, or (while tools are allowed) a tool request."""
    return {"anyOf": [final, tool_schema()]} if tools_allowed else final


# ------------------------------------------------------------------ parsing
def _load(text: str) -> dict:
    s = text.strip()
    if s.startswith("```"):
        s = s.strip("`").removeprefix("json").strip()
    try:
        obj, _ = json.JSONDecoder().raw_decode(s[s.index("{"):] if "{" in s else s)
    except (json.JSONDecodeError, ValueError):
        raise RecordError(f"the reply is not a JSON object: {text[:80]!r}") from None
    if not isinstance(obj, dict):
        raise RecordError("the reply is not a JSON object")
    return obj


def _check_ids(field: str, ids: list[str], allowed: set[str]) -> list[str]:
    bad = [i for i in ids if i not in allowed]
    if bad:
        raise RecordError(f"{field} cites {', '.join(bad)}, which this face does not have")
    return list(dict.fromkeys(ids))


def parse_turn(text: str) -> dict:
    """The JSON object of a reply (a record or a tool request), or RecordError."""
    return _load(text)


def is_tool_request(obj: dict) -> bool:
    return "tool" in obj


def _validate(cls: type[_Record], obj: dict | str, what: str):
    """The record of type `cls` in `obj` (a reply's text or its JSON object), or RecordError."""
    if isinstance(obj, str):
        obj = _load(obj)
    try:
        return cls.model_validate(obj)
    except ValidationError as exc:
        e = exc.errors()[0]
        raise RecordError(f"not a valid {what} ({'.'.join(map(str, e['loc']))}: {e['msg']})") from None


def parse_tool_request(obj: dict) -> ToolRequest:
    return _validate(ToolRequest, obj, "tool request")


def parse_decision(obj: dict | str, f: FaceFacts, labels: list[str]) -> Decision:
    """A Decision checked against this face: known label, existing ids, arc in time order."""
    d = _validate(Decision, obj, "decision")
    if d.label not in labels:
        raise RecordError(f"label '{d.label}' is not in the label set")
    if d.alt is not None and d.alt not in labels:
        raise RecordError(f"alt '{d.alt}' is not in the label set")
    cite = _check_ids("cite", d.cite, set(f.events))[:MAX_CITE]
    why = _check_ids("why", d.why, set(f.events))[:MAX_WHY]
    arc = _check_ids("arc", d.arc, set(f.segments))[:MAX_ARC]
    if f.segments and not arc:
        raise RecordError("arc is empty")
    if f.events and not cite and d.label != NEUTRAL:
        raise RecordError(f"reads {d.label} but cites no event, and the face has measured events")
    order = list(f.segments)
    arc = sorted(arc, key=order.index)  # the story is told in time order
    alt = None if d.alt == d.label else d.alt
    return d.model_copy(update={"cite": cite, "why": why if alt else [], "arc": arc, "alt": alt,
                                "note": d.note.strip()[:NOTE_CHARS]})


def parse_answer(obj: dict | str, refs: list[str], labels: list[str],
                 segments: dict[str, str] | None = None) -> Answer:
    """An Answer whose ids are among `refs` (the face's and its tool results'); with
    `segments` (id -> label), the stretches it cites are of the emotion it names."""
    a = _validate(Answer, obj, "answer")
    if a.label is not None and a.label not in labels:
        raise RecordError(f"label '{a.label}' is not in the label set")
    other = [r for r in a.ref if a.label is not None and segments and segments.get(r, a.label) != a.label]
    if other:
        raise RecordError(f"the answer names {a.label} but cites {', '.join(other)}, "
                          f"a stretch of another emotion")
    return a.model_copy(update={"ref": _check_ids("ref", a.ref, set(refs))[:MAX_CITE],
                                "note": a.note.strip()[:NOTE_CHARS]})
