"""Synthetic timelines and the conversation builder (finetune/data/)."""

from __future__ import annotations

import numpy as np
import pytest

from finetune.data import builder, scenarios, synthetic


@pytest.mark.parametrize("kind,label,must", [
    ("crying", "sadness", {"AU01", "AU04", "AU15", "AU17"}),
    ("fear_vs_surprise", "fear", {"AU04", "AU20"}),
    ("surprise_vs_fear", "surprise", {"AU01", "AU02", "AU05", "AU26"}),
    ("polite_smile", "happiness", {"AU12"}),
    ("speech", "neutral", set()),
])
def test_labels_follow_the_scenario(kind, label, must):
    analysis, examples = synthetic.make_clip(11, scenario=kind)
    (ex,) = examples
    assert ex.scenario == kind and ex.label == label and ex.confuser
    assert must <= set(ex.aus)
    if kind == "speech":
        assert ex.aus == [] and ex.segment_order == ["neutral"]
    else:
        assert label in ex.segment_order
    t = analysis.track(ex.track_id)
    # Every per-frame series the agent reads is filled, and the timeline ran.
    for name in ("aus", "au_occurrence", "emotions", "valence", "arousal", "occlusion", "blendshapes"):
        assert getattr(t, name) is not None and len(getattr(t, name)) == t.n
    assert t.segments and t.summary is not None


def test_crying_then_laughing_keeps_both_in_order():
    """The demo clip's story: crying that fires the smile blendshapes, then real laughter.
    The truth keeps both, in that order, so the target arc tells them both."""
    analysis, (ex,) = synthetic.make_clip(3, scenario="crying_then_laughing")
    assert ex.confuser and ex.segment_order.index("sadness") < ex.segment_order.index("happiness")
    assert {"AU01", "AU04", "AU15", "AU06", "AU12"} <= set(ex.aus)
    assert ex.label in ("sadness", "happiness")


def test_labels_match_the_spec_parameters():
    rng = np.random.default_rng(5)
    spec = scenarios.scenario_spec("sequence", rng, 1, "id0001", 0.0, 6.0)
    first, second = sorted(spec.phases, key=lambda p: p.onset)
    assert spec.segment_order == ["neutral", first.label, second.label]
    held = {p.label: p.release - p.apex for p in spec.phases}
    assert spec.label == max(held, key=held.get)
    expected = sorted({a for p in spec.phases for a, v in p.aus.items() if v >= scenarios.TRUE_AU_MIN})
    assert spec.true_aus == expected


def test_deterministic_and_measured_by_the_real_estimator():
    a1, e1 = synthetic.make_clip(21)
    a2, e2 = synthetic.make_clip(21)
    assert a1.to_json() == a2.to_json() and e1 == e2
    # Strong expressions are seen by the estimator: most true AUs are observed.
    hit = tot = 0
    for seed in range(12):
        a, exs = synthetic.make_clip(100 + seed, scenario="single")
        obs = set(builder.observed_aus(a, exs[0].track_id))
        hit += len(set(exs[0].aus) & obs)
        tot += len(exs[0].aus)
    assert tot and hit / tot >= 0.6, (hit, tot)


def test_conversations_and_split():
    from agent import evidence as ev
    from agent.decision import parse_answer, parse_decision
    from agent.graph import answer_messages, decide_messages
    from tools.analysis import Analysis

    dsd = builder.synthetic_dataset(12, seed=3, test_share=0.3, tool_share=0.5, question_share=1.0)
    train, test = dsd["train"], dsd["test"]
    assert not set(train["identity"]) & set(test["identity"])
    rows = list(train) + list(test)
    assert {r["kind"] for r in rows} == {"decide", "answer"}
    assert any(len(r["messages"]) == 5 for r in rows)  # some rows carry a tool request + result
    for r in rows:
        msgs = r["messages"]
        a = Analysis.from_json(r["analysis"])
        f = ev.facts(a, a.track(r["track_id"]))
        assert [m["role"] for m in msgs[:2]] == ["system", "user"] and msgs[-1]["role"] == "assistant"
        assert r["prompt"] == msgs[:-1]
        if r["kind"] == "decide":
            # Training opens exactly as the agent does, and the target is a valid record of this face.
            assert msgs[:2] == decide_messages(a, r["track_id"])
            d = parse_decision(msgs[-1]["content"], f, a.emotion_labels)
            assert d.label == r["label"]  # the truth, not the rules
            assert {f.events[i].au for i in d.cite} <= set(r["aus"])
            # the label's own pattern is cited first (SFT v8 cited the crying, not the smile)
            own = [f.events[i].au in ev.prototype_aus(d.label) for i in d.cite]
            assert own == sorted(own, reverse=True)
        else:
            assert msgs[0] == answer_messages(a, r["track_id"], "?", None)[0]
            refs = [*f.segments, *f.events, "W1", "C1"]
            parse_answer(msgs[-1]["content"], refs, a.emotion_labels)
        if len(msgs) == 5:
            assert msgs[2]["content"].startswith('{"tool":') and "<tool_response>" in msgs[3]["content"]


def test_targets_override_the_rules_where_they_are_wrong():
    """On a fear face the rules read as surprise, the target says fear, rules out surprise,
    and names the events that tell them apart."""
    from agent import engine
    from agent import evidence as ev
    from finetune.data import targets

    for seed in range(40, 80):
        a, (ex,) = synthetic.make_clip(seed, scenario="fear_vs_surprise")
        t = a.track(ex.track_id)
        if engine.conclude(a, t).label == "surprise":
            break
    else:
        pytest.fail("the rules read no fear face as surprise")
    d = targets.truth_decision(a, ex.track_id, label=ex.label, aus=ex.aus,
                               segment_order=ex.segment_order, scenario=ex.scenario, seed=seed)
    f = ev.facts(a, t)
    assert d.label == "fear" and d.alt == "surprise"
    assert d.why and all(f.events[i].au not in {"AU01", "AU02", "AU05", "AU26"} for i in d.why)
    assert d.note == "" or "fear" in d.note


def test_the_arc_follows_the_true_order():
    from agent import evidence as ev
    from finetune.data import targets

    a, (ex, *_) = synthetic.make_clip(31, scenario="sequence")
    f = ev.facts(a, a.track(ex.track_id))
    arc = targets.arc_for(f, ex.segment_order)
    told = [f.segments[i].label for i in arc]
    # A subsequence of the truth, in its order.
    it = iter(ex.segment_order)
    assert all(lab in it for lab in told) and told


def test_questions_about_a_reading_the_face_never_shows_are_taught_the_chats_answer():
    """The targets of "absent" questions, and of an injected instruction naming a reading
    the face never shows, are what the chat's schema admits for that question and what the
    rules answer (agent.graph.Task.final_schema, agent.answers.fallback_answer): before
    session 14 they cited nothing, while the chat now cites the reading that holds."""
    import random

    from jsonschema import Draft202012Validator

    from agent import engine
    from agent.answers import fallback_answer
    from agent.graph import answer_task
    from finetune.data import targets

    seen = set()
    for seed in range(60):
        a, (ex, *_) = synthetic.make_clip(seed, scenario="single")
        d = engine.decide(a, a.track(ex.track_id))
        for qa in targets.questions(a, ex.track_id, d, random.Random(seed), n=12):
            task = answer_task(a, ex.track_id, qa.question, d)
            if qa.kind not in ("absent", "inject") or qa.answer.label is not None:
                continue
            seen.add(qa.kind)
            assert qa.answer.note.startswith("No stretch of this face reads as"), qa
            assert qa.answer.ref and Draft202012Validator(task.final_schema()).is_valid(
                qa.answer.model_dump()), qa
            assert fallback_answer(task, qa.question) == qa.answer, qa
    assert seen == {"absent", "inject"}


def test_the_words_questions_ask_with_are_read_as_their_reading():
    """Every verb the targets ask about a reading with ("When does she start relaxing?") is
    read by the lexicon as that reading, so the chat's schemas (agent.answers.asked_when)
    apply to the question; "relaxing" was not, and v8 answered it with another stretch."""
    from agent.faithfulness import emotion_mentions
    from finetune.data import targets

    for label, verbs in targets.VERBS.items():
        for verb in verbs:
            assert {lab for _, lab, _ in emotion_mentions(f"When does she start {verb}?")} == {label}, verb
