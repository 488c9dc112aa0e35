"""Decision records, their per-face schemas, and the renderer that turns them into text.

The renderer is where an answer is written: every number and span in the text must
be the measurement the cited id points to, every caption sentence must be whole, and
the model's own words must be shown only when the faithfulness check passes them.
"""

from __future__ import annotations

import json
import re

import pytest
from agent_synthetic import make_analysis, make_track

from agent import evidence as ev
from agent import phrases, render
from agent.decision import (
    Answer,
    Decision,
    RecordError,
    answer_schema,
    decision_schema,
    parse_answer,
    parse_decision,
    tool_schema,
)
from agent.schema import ExplainResult
from agent.subtitles import subtitles

A = make_analysis(faces=2)
T0 = A.track(0)
F0 = ev.facts(A, T0)


def _ids(au: str) -> list[str]:
    return [i for i, e in F0.events.items() if e.au == au]


SMILE = Decision(label="happiness", conf=0.8, cite=[*_ids("AU12"), *_ids("AU06")], arc=["neutral1", "happiness1"],
                 alt="surprise", why=[], note="")


def test_ids_say_what_they_name():
    assert list(F0.segments) == ["neutral1", "happiness1"] and F0.segments["happiness1"].label == "happiness"
    starts = [e.start for e in F0.events.values()]
    assert starts == sorted(starts) and list(F0.events) == ["AU45a", "AU12a", "AU06a"]
    text = ev.render(A, 0)
    for i, e in F0.events.items():
        assert f"{i} {e.start:.1f}-{e.end:.1f} peak {e.peak:.1f}" in text
    # Face 1 rests twice: its neutral stretches are ranked by length.
    f1 = ev.facts(A, A.track(1))
    assert list(f1.segments) == ["neutral2", "surprise1", "neutral1"]
    dur = {i: s.end - s.start for i, s in f1.segments.items()}
    assert dur["neutral1"] >= dur["neutral2"]


def test_a_second_activation_of_an_au_gets_the_next_letter():
    from agent_synthetic import make_track

    t = make_track(0, 0.0, 6.0, events=[("AU12", 0.5, 1.0, 1.5, 1.5), ("AU12", 3.0, 4.0, 5.0, 3.0)],
                   segments=[("happiness", 0.0, 6.0, 0.8)])
    a = make_analysis(faces=1).model_copy(update={"tracks": [t]})
    f = ev.facts(a, t)
    assert list(f.events) == ["AU12b", "AU12a"] and f.events["AU12a"].peak == 3.0


def test_schema_enumerates_this_faces_ids_and_labels():
    s = decision_schema(F0, A.emotion_labels)
    props = s["properties"]
    assert props["cite"]["items"]["enum"] == list(F0.events)
    assert props["arc"]["items"]["enum"] == F0.story_segments()
    assert props["label"]["enum"] == A.emotion_labels
    assert props["cite"]["minItems"] == 1  # the face has events: a reading rests on some
    a = answer_schema(["neutral1", "W1"], A.emotion_labels)
    assert a["properties"]["ref"]["items"]["enum"] == ["neutral1", "W1"]
    tools = {o["properties"]["tool"]["const"] for o in tool_schema()["anyOf"]}
    assert {"moment", "time_window", "list_events", "compare_moments"} <= tools


def test_an_emotion_read_from_a_face_that_moved_cites_what_moved():
    """An empty cite rendered "No Action Unit is cited" beside AU12 at 3.2: the schema needs
    one id where the face has events, and parse_decision refuses an emotion citing none (a
    server that ignores the schema); a neutral reading may cite none, as trained."""
    import jsonschema

    rec = {"cite": [], "arc": ["happiness1"], "label": "happiness", "conf": 0.6, "alt": None,
           "why": [], "note": ""}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rec, decision_schema(F0, A.emotion_labels))
    with pytest.raises(RecordError, match="cites no event"):
        parse_decision(rec, F0, A.emotion_labels)
    assert parse_decision({**rec, "label": "neutral"}, F0, A.emotion_labels).cite == []


def test_an_answer_naming_an_emotion_cites_only_its_stretches():
    """answer_schema with the face's segments: a happiness answer may cite happiness1, any
    event or tool result, never neutral1; a label-less answer may cite anything. The JSON
    schema is checked by jsonschema, parse_answer says the same for a server that ignores it."""
    import jsonschema

    segs = {"neutral1": "neutral", "happiness1": "happiness"}
    refs = ["neutral1", "happiness1", "AU12a", "W1"]
    s = answer_schema(refs, A.emotion_labels, segs)
    ok = [{"label": "happiness", "ref": ["happiness1", "AU12a"], "note": ""},
          {"label": "neutral", "ref": ["neutral1", "W1"], "note": ""},
          {"label": None, "ref": ["neutral1", "happiness1"], "note": ""}]
    for rec in ok:
        jsonschema.validate(rec, s)
        parse_answer(rec, refs, A.emotion_labels, segs)
    bad = {"label": "happiness", "ref": ["neutral1"], "note": ""}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, s)
    with pytest.raises(RecordError, match="cites neutral1, a stretch of another emotion"):
        parse_answer(bad, refs, A.emotion_labels, segs)
    parse_answer(bad, refs, A.emotion_labels)  # without the segments, only the ids are checked


def test_parse_checks_the_record_against_the_face():
    ok = parse_decision(json.dumps({**SMILE.model_dump(), "arc": ["happiness1", "neutral1"]}), F0,
                        A.emotion_labels)
    assert ok.arc == ["neutral1", "happiness1"]  # told in time order
    for bad, needle in [({"cite": ["AU04a"]}, "AU04a"), ({"label": "joy"}, "label set"),
                        ({"arc": []}, "arc is empty"), ({"conf": 3}, "conf")]:
        with pytest.raises(RecordError, match=needle):
            parse_decision({**SMILE.model_dump(), **bad}, F0, A.emotion_labels)
    with pytest.raises(RecordError, match="not a JSON object"):
        parse_decision("The face is happy.", F0, A.emotion_labels)
    with pytest.raises(RecordError, match="W2"):
        parse_answer({"ref": ["W2"], "label": None, "note": ""}, ["neutral1", "W1"], A.emotion_labels)


def test_rendered_numbers_are_the_measurements():
    e = render.explanation(A, T0, SMILE)
    for o in e.key_observations:
        (span,) = [s for s in F0.events.values() if s.au == o.au]
        assert (o.intensity, o.start, o.end) == (round(span.peak, 1), round(span.start, 2), round(span.end, 2))
    assert e.conclusion.label == "happiness" and e.conclusion.confidence == 0.8
    val, aro = ev.mean_affect(T0)
    assert e.conclusion.valence == round(val, 3)
    assert "Duchenne" in e.interpretation  # AU06 overlaps the cited AU12
    assert "neutral (0.0-1.9 s) -> happiness (2.0-6.0 s)" in e.interpretation
    # Surprise averaged 0.02 and never led: nothing to set aside. Ruled out on evidence, it is said.
    assert "Surprise" not in e.interpretation
    why = render.explanation(A, T0, SMILE.model_copy(update={"why": _ids("AU12")})).interpretation
    assert "Surprise was considered and ruled out: AU12 (lip corner puller) is part of" in why
    text = e.to_text()
    for m in re.finditer(r"(AU\d\d) \(([^)]+)\), intensity ([\d.]+), ([\d.]+)-([\d.]+) s", text):
        (span,) = [s for s in F0.events.values() if s.au == m.group(1)]
        assert float(m.group(3)) == round(span.peak, 1) and float(m.group(4)) == round(span.start, 1)


def test_a_reading_never_in_play_is_not_said_to_be_set_aside():
    probs = ev.mean_emotions(A, T0)
    (absent,) = [lab for lab in ("sadness", "anger", "fear", "disgust", "surprise", "contempt")
                 if probs.get(lab, 0.0) < render.ALT_MIN_PROB and lab not in
                 {s.label for s in F0.segments.values()}][:1]
    e = render.explanation(A, T0, SMILE.model_copy(update={"alt": absent}))
    assert "set aside" not in e.interpretation and absent.capitalize() not in e.interpretation
    assert "Duchenne" in e.interpretation  # the rest of the paragraph is still there


def test_caption_follows_the_arc_in_whole_sentences():
    e = render.explanation(A, T0, SMILE)
    assert e.caption.startswith("At the beginning")
    assert [s.text for s in e.caption_sentences] and all(s.text.endswith(".") for s in e.caption_sentences)
    assert " ".join(s.text for s in e.caption_sentences) == e.caption
    first, last = e.caption_sentences[0], e.caption_sentences[-1]
    assert first.evidence[0] == "neutral1" and (first.start, first.end) == (0.0, 1.9)
    assert any("happiness1" in s.evidence for s in e.caption_sentences)
    assert "covered" in last.text and last.start == 4.0  # the hand over the face, 4.0-4.5 s
    neutral_at = e.caption.index("neutral")
    assert neutral_at < max(e.caption.find(w) for w in ("smil", "happy", "cheerful"))


def test_the_laughter_sentence_names_the_laughter_movements():
    """Crying with raised cheeks, a covered stretch, then laughter (WolfgangLanger_Pexels.mp4's
    shape): the laughter's lip-corner pull starts as the middle stretch ends, and its cheek
    raise repeats one of the crying. Both belong to the laughter's sentence."""
    from agent_synthetic import make_track

    from tools.analysis import Analysis, Sampling, SourceInfo

    t = make_track(0, 0.0, 8.0,
                   events=[("AU06", 0.3, 1.0, 2.0, 2.5), ("AU43", 0.2, 1.0, 2.2, 3.0),
                           ("AU04", 3.2, 3.8, 4.6, 2.0), ("AU12", 5.0, 6.5, 8.0, 4.0),
                           ("AU06", 5.1, 6.6, 8.0, 4.0)],
                   segments=[("sadness", 0.0, 2.5, 0.7), ("disgust", 3.0, 5.0, 0.5),
                             ("happiness", 5.0, 8.0, 0.85)])
    a = Analysis(source=SourceInfo(name="cry_laugh.mp4", kind="video", width=640, height=360,
                                   duration_s=8.0), sampling=Sampling(), tracks=[t])
    f = ev.facts(a, t)
    d = Decision(label="happiness", conf=0.7, cite=[], arc=["sadness1", "disgust1", "happiness1"],
                 alt=None, why=[], note="")
    sentences = render.explanation(a, t, d).caption_sentences
    laugh = next(s for s in sentences if "happiness1" in s.evidence)
    named = {f.events[i].au for i in laugh.evidence if i in f.events}
    assert named == {"AU06", "AU12"}, laugh.text
    middle = next(s for s in sentences if "disgust1" in s.evidence)
    assert not {f.events[i].au for i in middle.evidence if i in f.events} & {"AU12"}, middle.text


def test_cue_phrases_name_no_emotion_but_their_own():
    # The caption's emotion words come from the segments; a movement phrase that said
    # "smile" put happiness into a neutral stretch, and the check flagged the renderer.
    from agent import faithfulness
    from prompts import load_yaml

    for au, cue in load_yaml("au_cues").items():
        for phrase in cue["action"]:
            assert not faithfulness.emotion_mentions(phrase), (au, phrase)
        # What an AU suggests for a label names that label only ("brows that separate
        # fear from surprise" named surprise in a face without it, and was flagged).
        for label, phrase in cue["suggests"].items():
            named = {lab for _, lab, neg in faithfulness.emotion_mentions(phrase) if not neg}
            assert named <= {label}, (au, label, phrase)


def test_a_faithful_note_is_shown_and_an_unfaithful_one_withheld():
    good = render.explanation(A, T0, SMILE.model_copy(update={"note": "A felt smile builds after 2 s"}))
    assert good.interpretation.endswith("A felt smile builds after 2 s.") and good.withheld == []
    for note, why in [("AU12 suggests a pouting, unhappy mouth.", "opposite meaning"),
                      ("She looks afraid.", "names fear"),
                      ("AU23 (lip corner puller) pulls the lips.", "AU23")]:
        e = render.explanation(A, T0, SMILE.model_copy(update={"note": note}))
        assert note not in e.to_text() and len(e.withheld) == 1 and why in e.withheld[0], e.withheld


def test_rule_out_says_only_what_emfacs_supports():
    f1 = ev.facts(A, A.track(1))
    brows = [i for i, e in f1.events.items() if e.au in ("AU01", "AU02")]
    d = Decision(label="surprise", conf=0.7, cite=brows, arc=["surprise1"], alt="fear", why=brows, note="")
    text = render.explanation(A, A.track(1), d).interpretation
    # AU01/AU02 belong to fear as well: no claim that they are surprise's alone.
    assert "Fear was considered and ruled out on AU0" in text and "facial pattern" not in text


def test_answers_name_the_time_and_what_the_face_does():
    text, withheld, times = render.answer(A, T0, Answer(ref=["happiness1"], label="happiness", note=""), {})
    assert text.startswith("From 2.0 to 6.0 s face 0 shows") and "AU12 3.2" in text
    assert times == [2.0] and withheld == []
    window = {"id": "W1", "start": 2.5, "end": 3.5, "at": 3.0, "label": "happiness",
              "emotions": {"happiness": 0.8}, "aus_present": {"AU12": 3.0, "AU06": 2.0}, "occlusion": 0.0}
    text, _, times = render.answer(A, T0, Answer(ref=["W1"], label="happiness",
                                                 note="She is smiling, not crying."), {"W1": window})
    assert text.startswith("She is smiling, not crying. At 3.0 s (2.5-3.5 s)") and times == [3.0]
    text, withheld, _ = render.answer(A, T0, Answer(ref=["W1"], label=None, note="She is furious."),
                                      {"W1": window})
    assert "furious" not in text and withheld


def test_a_stretch_is_described_only_by_movements_that_peak_inside_it():
    # WolfgangLanger: the lips-part event starts 0.08 s after the crying ends and peaks
    # at 12.4 s in the laughter; "the eyes close and the lips part (AU25 4.7)" was said
    # of the crying.
    t = make_track(0, 0.0, 8.0, events=[("AU43", 0.0, 1.5, 3.0, 5.0), ("AU25", 3.1, 6.5, 8.0, 4.7)],
                   segments=[("sadness", 0.0, 3.0, 0.6), ("happiness", 3.1, 8.0, 0.8)])
    a = make_analysis(faces=1).model_copy(update={"tracks": [t]})
    text, _, _ = render.answer(a, t, Answer(ref=["sadness1"], label="sadness", note=""), {})
    assert "AU43 5.0" in text and "AU25" not in text, text
    text, _, _ = render.answer(a, t, Answer(ref=["happiness1"], label="happiness", note=""), {})
    assert "AU25 4.7" in text and "AU43" not in text, text


def test_subtitles_carry_each_caption_sentence_and_its_span():
    e = render.explanation(A, T0, SMILE)
    result = ExplainResult(analysis=make_analysis(faces=1), explanations=[e], text=e.to_text())
    srt = subtitles(result, "srt")
    assert srt.count(" --> ") == len(e.caption_sentences)
    assert "00:00:00,000 --> 00:00:01,900\nAt the beginning" in srt
    vtt = subtitles(result, "vtt")
    assert vtt.startswith("WEBVTT") and "00:00:00.000 --> 00:00:01.900" in vtt
    with pytest.raises(ValueError, match="srt or vtt"):
        subtitles(result, "ass")


def test_a_ruled_out_reading_is_told_as_the_decided_label():
    """Face 1's surprise stretch, with surprise ruled out for fear: the caption tells fear and
    the interpretation says what the measurement read."""
    f1 = ev.facts(A, A.track(1))
    d = Decision(label="fear", conf=0.6, cite=[i for i in f1.events if i.startswith(("AU01", "AU05"))],
                 arc=["neutral2", "surprise1", "neutral1"], alt="surprise", why=[], note="")
    e = render.explanation(A, A.track(1), d)
    assert "fear (2.0-4.0 s, measured as surprise)" in e.interpretation
    assert "fear" in e.caption.lower() or "fright" in e.caption.lower() or "alarmed" in e.caption.lower()
    assert "surprise" not in e.caption.lower() and "astonished" not in e.caption.lower()
    from agent.faithfulness import check

    assert check(e, A) == []


def test_the_label_over_a_ruled_out_reading_keeps_the_stretch_that_reading_measured():
    """She cries, then laughs: happiness is the reading and sadness the one set aside, but the
    arc tells the laughter's own stretch, so the crying stays crying in the caption (it was
    told as happiness, and the caption lost the crying)."""
    from agent_synthetic import make_track

    from finetune import rewards
    from tools.analysis import Analysis, Sampling, SourceInfo

    t = make_track(0, 0.0, 8.0,
                   events=[("AU01", 0.3, 1.0, 2.5, 3.0), ("AU15", 0.3, 1.0, 2.5, 2.5),
                           ("AU12", 5.0, 6.5, 8.0, 4.0), ("AU06", 5.1, 6.6, 8.0, 4.0)],
                   segments=[("sadness", 0.0, 3.0, 0.7), ("happiness", 5.0, 8.0, 0.85)])
    a = Analysis(source=SourceInfo(name="cry_laugh.mp4", kind="video", width=640, height=360,
                                   duration_s=8.0), sampling=Sampling(), tracks=[t])
    d = Decision(label="happiness", conf=0.6, cite=[], arc=["sadness1", "happiness1"],
                 alt="sadness", why=[], note="")
    e = render.explanation(a, t, d)
    assert rewards.caption_emotions(e.caption) == ["sadness", "happiness"], e.caption
    assert "measured as" not in e.interpretation


def test_the_caption_opens_and_closes_on_the_measured_rest_the_arc_leaves_out():
    """A face rests, smiles, rests again; a record whose arc names only the smile still gets a
    caption that tells the clip from start to end (the rest is a measurement, as every span
    is), and a brief resting flicker is not told."""
    from agent_synthetic import make_track

    from finetune import rewards
    from tools.analysis import Analysis, Sampling, SourceInfo

    t = make_track(0, 0.0, 10.0, events=[("AU12", 2.0, 4.0, 8.0, 3.0), ("AU06", 2.1, 4.1, 8.0, 3.0)],
                   segments=[("neutral", 0.0, 2.0, 0.8), ("happiness", 2.0, 8.0, 0.85),
                             ("neutral", 8.0, 10.0, 0.8)])
    a = Analysis(source=SourceInfo(name="rest_smile_rest.mp4", kind="video", width=640, height=360,
                                   duration_s=10.0), sampling=Sampling(), tracks=[t])
    f = ev.facts(a, t)
    smile = Decision(label="happiness", conf=0.8, cite=list(f.events), arc=["happiness1"], alt="",
                     why=[], note="")
    e = render.explanation(a, t, smile)
    assert rewards.caption_emotions(e.caption) == ["neutral", "happiness", "neutral"], e.caption
    first, last = e.caption_sentences[0], e.caption_sentences[-1]
    assert (first.start, first.end) == (0.0, 2.0) and (last.start, last.end) == (8.0, 10.0)
    # The same record on a face whose rest is a 0.3 s flicker: nothing to add.
    t2 = make_track(0, 0.0, 10.0, events=[("AU12", 0.3, 4.0, 10.0, 3.0)],
                    segments=[("neutral", 0.0, 0.3, 0.6), ("happiness", 0.3, 10.0, 0.85)])
    a2 = Analysis(source=SourceInfo(name="smile.mp4", kind="video", width=640, height=360,
                                    duration_s=10.0), sampling=Sampling(), tracks=[t2])
    e2 = render.explanation(a2, t2, smile.model_copy(update={"cite": list(ev.facts(a2, t2).events)}))
    assert rewards.caption_emotions(e2.caption) == ["happiness"], e2.caption


def test_a_reading_set_aside_on_its_probability_is_told_by_its_mean_and_where_it_led():
    """The sentence said the probability "stayed at or below" the face's mean, which on
    WolfgangLanger (fear: mean 0.07, segments at p 0.40) is false. It gives the mean as a
    mean, and the stretches where that reading led; "briefly" only where they are brief
    (it called WolfgangLanger's 0.0-5.8 s of sadness brief)."""
    d = SMILE.model_copy(update={"alt": "surprise", "why": []})
    f1 = ev.facts(A, A.track(1))
    surprise = [(s.start, s.end) for s in f1.segments.values() if s.label == "surprise"]
    assert surprise  # face 1 has a surprise stretch, face 0 none
    e1 = render.explanation(A, A.track(1), d.model_copy(update={"cite": [], "arc": list(f1.segments)[:1]}))
    mean = ev.mean_emotions(A, A.track(1))["surprise"]
    assert f"averaged {mean:.2f} over the face" in e1.interpretation
    t1 = A.track(1)
    share = sum(b - a for a, b in surprise) / (t1.end - t1.start)
    assert share >= render.ALT_BRIEF_SHARE  # a third of the face: not "briefly"
    assert "though it led for " + phrases.spans_text(sorted(surprise)) + "." in e1.interpretation
    assert "briefly" not in e1.interpretation
    e0 = render.explanation(A, T0, d)  # face 0: surprise averaged 0.02 and never led
    assert "averaged" not in e0.interpretation and "led only briefly" not in e0.interpretation
    assert "stayed at or below" not in e0.interpretation + e1.interpretation


def test_cited_movements_outside_the_labels_pattern_are_not_said_to_point_to_it():
    """The demo said AU01, AU09, AU23, AU02 and AU06 'point to happiness': only AU06 does."""
    f = ev.facts(A, T0)
    happy = ev.prototype_aus("happiness")
    fit = [i for i in f.events if f.events[i].au in happy]
    off = [i for i in f.events if f.events[i].au not in happy]
    assert fit and off
    e = render.explanation(A, T0, SMILE.model_copy(update={"cite": [fit[0], off[0]]}))
    said = e.interpretation.split(". ")
    points = next(s for s in said if f.events[fit[0]].au in s)  # "..., point to happiness"
    assert "happiness" in points and f.events[off[0]].au not in points
    assert any(f.events[off[0]].au in s and "not part of the pattern of happiness" in s for s in said)
    only_off = render.explanation(A, T0, SMILE.model_copy(update={"cite": [off[0]]}))
    assert "point to" not in only_off.interpretation and "combine into" not in only_off.interpretation
    assert "outside the facial pattern of happiness" in only_off.interpretation
    # Cues were cited, so the sentence for a record citing none is not added (it was, on
    # 0-f1-su-ph.jpg: "... point to surprise. No cited Action Unit stands out, ...").
    assert "No cited Action Unit" not in e.interpretation + only_off.interpretation
    all_fit = render.explanation(A, T0, SMILE.model_copy(update={"cite": fit[:1]}))
    assert "No cited Action Unit" not in all_fit.interpretation
    assert not e.unfaithful_claims and not only_off.unfaithful_claims


def test_a_decisions_note_is_a_remark_true_of_this_face_under_its_label():
    """With the face's true remarks the note is one of them or empty, per label: face 1
    (brows up, jaw dropped, no AU04) may say it reads as surprise, not fear, only in a
    surprise record; face 0 (a smile with AU06) has no remark, not even the polite-smile one
    ("does not reach the eyes", false beside its AU06)."""
    import jsonschema

    from agent.faithfulness import true_remarks

    t1 = A.track(1)
    notes1, notes0 = true_remarks(A, t1, A.emotion_labels), true_remarks(A, A.track(0), A.emotion_labels)
    assert not any(notes0.values())
    surprise_note = "Raised brows and a dropped jaw with no lowered brows read as surprise, not fear."
    assert notes1["surprise"] == [surprise_note] and notes1["fear"] == []
    f1 = ev.facts(A, t1)
    schema = decision_schema(f1, A.emotion_labels, notes1)
    rec = {"cite": [next(iter(f1.events))], "arc": f1.story_segments()[:1], "label": "surprise",
           "conf": 0.7, "alt": "fear", "why": [], "note": surprise_note}
    jsonschema.validate(rec, schema)
    jsonschema.validate({**rec, "note": ""}, schema)
    for bad in ({**rec, "label": "fear"}, {**rec, "note": "The face looks afraid."}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_an_answers_note_is_a_sentence_for_its_label():
    """With the question's sentences (answers.answer_remarks) an answer's note is one of its
    label's: a choice question's "It is crying, not smiling." only in a sadness answer."""
    import jsonschema

    from agent.answers import answer_remarks

    segs = {"neutral1": "neutral", "happiness1": "happiness", "sadness1": "sadness"}
    refs = [*segs, "W1"]
    notes = answer_remarks("Is she smiling or crying at 3 s?", A.emotion_labels)
    s = answer_schema(refs, A.emotion_labels, segs, notes)
    jsonschema.validate({"label": "sadness", "ref": ["W1"], "note": "It is crying, not smiling."}, s)
    jsonschema.validate({"label": None, "ref": ["W1"], "note": "The face never shows that."}, s)
    for bad in ({"label": "happiness", "ref": ["W1"], "note": "It is crying, not smiling."},
                {"label": "happiness", "ref": ["W1"], "note": "Smiling rather than looking on the side."}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, s)


def test_a_cited_movement_of_another_reading_in_the_arc_is_said_to_belong_to_it():
    """Crying then laughing: the demo said AU01 'was measured as well, but not part of that
    pattern' beside the smile; it is the crying's, and the text says so with its span."""
    t = A.track(1)
    f = ev.facts(A, t)
    surprise = next(i for i in f.segments if f.segments[i].label == "surprise")
    brows = [i for i in f.events if f.events[i].au in {"AU02", "AU26"}]
    d = Decision(label="contempt", conf=0.5, cite=brows, arc=[surprise], note="")
    e = render.explanation(A, t, d)
    s = f.segments[surprise]
    assert (f"part of the facial pattern of surprise, which the face shows at "
            f"{phrases.spans_text([(s.start, s.end)])}.") in e.interpretation
    assert "not part of the pattern of contempt" not in e.interpretation
    assert "outside the facial pattern of contempt" not in e.interpretation
    # without that reading in the arc, they are outside the label's pattern as before
    e2 = render.explanation(A, t, d.model_copy(update={"arc": []}))
    assert "outside the facial pattern of contempt" in e2.interpretation
    assert "facial pattern of surprise" not in e2.interpretation


def test_a_moment_that_reads_weakly_is_not_said_to_look_like_it():
    """WolfgangLanger at 7 s (her hand over her face) reads disgust at p=0.31; v8 answered
    "The person looks disgusted there." The schema now offers only the sentences that say the
    reading is weak, for that label only."""
    import jsonschema

    from agent.answers import WEAK_READING, answer_remarks, moment_remarks, weak_readings

    results = [{"id": "W1", "label": "disgust", "emotions": {"disgust": 0.31, "sadness": 0.2}},
               {"id": "W2", "label": "happiness", "emotions": {"happiness": 0.9}}, {"id": "E1"}]
    assert weak_readings(results) == {"disgust"}
    assert weak_readings([{"label": "disgust", "emotions": {"disgust": WEAK_READING}}]) == set()
    assert weak_readings([{"label": "disgust", "emotions": {"disgust": WEAK_READING - 0.01}}]) == {"disgust"}
    assert moment_remarks("disgust", True) != moment_remarks("disgust", False)
    segs = {"disgust1": "disgust", "happiness1": "happiness"}
    notes = answer_remarks("What happens at second 7?", A.emotion_labels, weak_readings(results))
    s = answer_schema([*segs, "W1", "W2"], A.emotion_labels, segs, notes)
    for weak in moment_remarks("disgust", True):
        jsonschema.validate({"label": "disgust", "ref": ["W1"], "note": weak}, s)
    jsonschema.validate({"label": "happiness", "ref": ["W2"], "note": "The person is smiling there."}, s)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"label": "disgust", "ref": ["W1"], "note": "The person looks disgusted there."}, s)


def test_a_flickering_cover_is_told_as_one_stretch():
    """Under a moving hand the flag flickers frame to frame; WolfgangLanger's 2.5-5.3 s was
    told as "2.5 s, 2.9-3.1 s, 3.2-3.3 s", the first three of its pieces."""
    import numpy as np

    from tools import timeline

    t = T0
    ts = np.asarray(t.timestamps)
    occ = np.where((ts >= 2.0) & (ts < 3.0) & (np.arange(len(ts)) % 2 == 0), 0.9, 0.0)
    t2 = t.model_copy(update={"occlusion": occ.astype(np.float32)})
    assert len(timeline.occluded_spans(t2)) > 3
    spans = ev.occluded_spans(t2)
    assert len(spans) == 1 and abs(spans[0][0] - 2.0) < 0.05 and abs(spans[0][1] - 3.0) < 0.2
    A2 = A.model_copy(update={"tracks": [t2, *A.tracks[1:]]})
    e = render.explanation(A2, t2, SMILE)
    assert f"within {phrases.spans_text(spans)}," in e.interpretation
    assert "Part of the face is covered at " + phrases.spans_text(spans) in e.caption
