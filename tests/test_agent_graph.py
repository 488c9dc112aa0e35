"""The agent loop's routing on crafted model replies: tool rounds, one repair, fallback, batching.

`ScriptedBackend` replays crafted replies (the issue's "crafted model outputs")
through the real graph, toolbox, record parser, renderer and faithfulness check;
the real models run in test_agent_backends.py, test_agent_e2e.py,
test_agent_openai.py and test_agent_vlm.py.
"""

from __future__ import annotations

import json

from agent_synthetic import make_analysis, no_face_analysis

from agent import ChatSession, chat, engine, explain
from agent import evidence as ev
from agent.backends import Backend, BackendError, Generation
from agent.decision import Decision
from agent.graph import MAX_TOOL_ROUNDS, answer_task, run_tasks

A = make_analysis(faces=1)
F0 = ev.facts(A, A.track(0))
SMILE_IDS = [i for i, e in F0.events.items() if e.au in ("AU06", "AU12")]
GOOD = Decision(label="happiness", conf=0.8, cite=SMILE_IDS, arc=["neutral1", "happiness1"], alt=None, why=[],
                note="").to_json()
CALL = json.dumps({"tool": "moment", "args": {"t": 3}})


class ScriptedBackend(Backend):
    name = "scripted"
    model_id = "scripted"

    def __init__(self, replies: list[str | Exception]):
        self.replies = list(replies)
        self.batches: list[list] = []  # the requests of every generate_batch call

    @property
    def seen(self) -> list[list[dict]]:
        return [r.messages for batch in self.batches for r in batch]

    def generate_batch(self, requests, *, temperature=0.0, seed=0) -> list[Generation]:
        self.batches.append(list(requests))
        out = []
        for req in requests:
            reply = self.replies.pop(0)
            if isinstance(reply, Exception):
                raise reply
            if req.on_token:
                for k in range(0, len(reply), 7):
                    req.on_token(reply[k:k + 7])
            out.append(Generation(text=reply, n_tokens=len(reply) // 4, seconds=0.01,
                                  constrained=req.schema is not None))
        return out


def test_a_valid_record_is_rendered_as_the_models_explanation():
    be = ScriptedBackend([GOOD])
    r = explain(A, backend=be)
    (e,) = r.explanations
    assert not e.fallback_used and e.decided_by == "model" and e.unfaithful_claims == []
    assert e.conclusion.label == "happiness" and e.decision["cite"] == SMILE_IDS
    assert {o.au for o in e.key_observations} == {"AU06", "AU12"}
    assert r.stats["turns"] == 1 and r.text.startswith("**Key Observations:**")
    (req,) = be.batches[0]
    # The schema allows this face's record or a tool request, with this face's ids.
    final, tools = req.schema["anyOf"]
    # the record: one branch per label (its note among that label's true remarks)
    assert [b["properties"]["label"]["const"] for b in final["anyOf"]] == A.emotion_labels
    assert all(b["properties"]["cite"]["items"]["enum"] == list(F0.events) for b in final["anyOf"])
    assert {o["properties"]["tool"]["const"] for o in tools["anyOf"]} >= {"moment", "list_events"}


def test_tool_round_feeds_result_back():
    be = ScriptedBackend([CALL, GOOD])
    r = explain(A, backend=be)
    assert not r.explanations[0].fallback_used
    (call,) = r.stats["tool_calls"]
    assert call["name"] == "moment" and call["result"]["id"] == "W1"
    assert "AU12" in call["result"]["aus_present"]
    tool_msg = be.seen[1][-1]
    assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"]) == call["result"]


def test_an_invalid_record_gets_one_repair():
    bad = GOOD.replace(SMILE_IDS[0], "AU99z")
    be = ScriptedBackend([bad, GOOD])
    r = explain(A, backend=be)
    assert not r.explanations[0].fallback_used
    repair = be.seen[1][-1]
    assert repair["role"] == "user" and "AU99z" in repair["content"]


def test_two_failures_fall_back_to_engine():
    be = ScriptedBackend(["The expression of face 0 is a mix of emotions.", '{"label": "joy"}'])
    r = explain(A, backend=be, seed=2)
    (e,) = r.explanations
    assert e.fallback_used and e.decided_by == "engine" and e.fallback_reason
    assert e.decision == engine.decide(A, A.tracks[0]).model_dump()
    assert len(be.seen) == 2  # one try, one repair, no more


def test_tool_rounds_are_bounded():
    be = ScriptedBackend([CALL] * MAX_TOOL_ROUNDS + [GOOD])
    r = explain(A, backend=be)
    assert len(r.stats["tool_calls"]) == MAX_TOOL_ROUNDS
    last = be.batches[-1][0].schema
    # no tool left to ask for: only the final record (its label branches) is allowed
    assert last == be.batches[0][0].schema["anyOf"][0]
    assert not r.explanations[0].fallback_used


def test_backend_error_falls_back():
    r = explain(A, backend=ScriptedBackend([BackendError("the server timed out after 1 s")]))
    (e,) = r.explanations
    assert e.fallback_used and "timed out" in e.fallback_reason


def test_faces_are_decided_in_one_batch():
    a = make_analysis(faces=2)
    f1 = ev.facts(a, a.track(1))
    surprise = Decision(label="surprise", conf=0.7, cite=list(f1.events)[:2], arc=["surprise1"]).to_json()
    be = ScriptedBackend([GOOD, surprise])
    r = explain(a, backend=be)
    assert len(be.batches) == 1 and len(be.batches[0]) == 2
    assert [e.track_id for e in r.explanations] == [0, 1]
    assert r.explanations[1].conclusion.label == "surprise"
    assert "### Face 0" in r.text and "### Face 1" in r.text


def test_a_question_is_answered_in_its_own_line():
    answer = json.dumps({"ref": ["happiness1"], "label": "happiness", "note": ""})
    be = ScriptedBackend([GOOD, answer])
    r = explain(A, backend=be, question="When does the smile start?")
    (e,) = r.explanations
    assert e.answer.startswith("From 2.0 to 6.0 s the person shows")
    text = r.text
    assert text.index("**Conclusion:**") < text.index("**Answer:**") < text.index("**Caption:**")
    assert "When does the smile start?" in be.seen[1][1]["content"]


def test_no_face_is_a_result():
    r = explain(no_face_analysis(), backend=ScriptedBackend([]))
    assert r.explanations == [] and "No face" in r.text and r.message


def test_chat_names_the_moment_the_model_looked_at():
    be = ScriptedBackend([GOOD, CALL, json.dumps({"ref": ["W1"], "label": "happiness",
                                                  "note": "The person is smiling there."})])
    s = ChatSession.start(explain(A, backend=be), backend=be)
    ans = chat(s, "What happens at second 3?")
    assert not ans.fallback_used and ans.record["ref"] == ["W1"]
    assert ans.text.startswith("The person is smiling there. At 3.0 s (2.5-3.5 s)")
    assert ans.frame_time == 3.0 and ans.tool_calls[0]["name"] == "moment"
    # The explanation's decision goes into the question's prompt.
    assert '"label":"happiness"' in be.seen[1][1]["content"]


def test_a_question_about_a_time_looks_there_first():
    """The first turn of an answer to "what happens at second 3?" can only be a look at 3 s:
    the model picks the tool, but cannot answer from a segment summary or invent a time."""
    from jsonschema import Draft202012Validator

    be = ScriptedBackend([GOOD, CALL, json.dumps({"ref": ["W1"], "label": "happiness", "note": ""})])
    explain(A, backend=be, question="What happens at second 3?")
    first_answer_turn, after_the_look = be.batches[1][0].schema, be.batches[2][0].schema
    ok = Draft202012Validator(first_answer_turn).is_valid
    assert ok({"tool": "moment", "args": {"t": 3.0}})
    assert not ok({"tool": "moment", "args": {"t": 4.0}})
    assert not ok({"tool": "compare_moments", "args": {"t1": 3.0, "t2": 3.0}})  # one time named
    assert not ok({"ref": ["happiness1"], "label": "happiness", "note": ""})
    assert Draft202012Validator(after_the_look).is_valid({"ref": ["W1"], "label": "happiness", "note": ""})
    # Two times: a comparison or a window between them, at those times.
    be = ScriptedBackend([GOOD, json.dumps({"tool": "compare_moments", "args": {"t1": 1.1, "t2": 2.9}}),
                          json.dumps({"ref": ["C1"], "label": "happiness", "note": ""})])
    explain(A, backend=be, question="How does the face change from 1.1 to 2.9 s?")
    ok = Draft202012Validator(be.batches[1][0].schema).is_valid
    assert ok({"tool": "compare_moments", "args": {"t1": 1.1, "t2": 2.9}})
    assert ok({"tool": "time_window", "args": {"start": 1.1, "end": 2.9}})
    assert not ok({"tool": "compare_moments", "args": {"t1": 1.0, "t2": 2.9}})
    assert not ok({"tool": "moment", "args": {"t": 1.1}})  # a change is not one moment


def test_a_when_question_naming_a_reading_is_answered_about_it():
    """"When does the smile stop?" asks about the smile (the lexicon's negation of "stop
    smiling" aside): the answer turn's schema lets the record name only happiness and cite
    only its stretches, its note is one of that label's sentences, and the rendered answer
    says where the smile ends. A question naming no reading keeps every label."""
    from jsonschema import Draft202012Validator

    reply = json.dumps({"label": "happiness", "ref": ["happiness1"], "note": ""})
    be = ScriptedBackend([GOOD, reply])
    s = ChatSession.start(explain(A, backend=be), backend=be)
    ans = chat(s, "When does the smile stop?")
    ok = Draft202012Validator(be.batches[1][0].schema).is_valid
    assert ok({"label": "happiness", "ref": ["happiness1"], "note": ""})
    assert ok({"label": "happiness", "ref": ["happiness1"], "note": "The person is smiling there."})
    assert not ok({"label": "neutral", "ref": ["neutral1"], "note": ""})
    assert not ok({"label": None, "ref": ["happiness1"], "note": ""})
    assert not ok({"label": "happiness", "ref": ["happiness1"], "note": "It stops when she frowns."})
    end = F0.segments["happiness1"].end
    assert not ans.fallback_used and f"ends at about {end:.1f} s" in ans.text
    be = ScriptedBackend([GOOD, json.dumps({"label": "neutral", "ref": ["neutral1"], "note": ""})])
    ans = chat(ChatSession.start(explain(A, backend=be), backend=be), "Why do you read it that way?")
    assert not ans.fallback_used and ans.record["label"] == "neutral"


def test_any_question_naming_one_reading_is_answered_about_it():
    """"Is the smile broad?" names one reading and no time: the answer names happiness and
    cites its stretches (SFT v8 answered "Are her lips pressed while she cries?" with the
    laughter). A question about a time, or naming two readings, keeps every label."""
    from jsonschema import Draft202012Validator

    def schema_for(question: str) -> dict:
        be = ScriptedBackend([GOOD, CALL, json.dumps({"label": "happiness", "ref": ["happiness1"], "note": ""})])
        chat(ChatSession.start(explain(A, backend=be), backend=be), question)
        return be.batches[-1][0].schema

    ok = Draft202012Validator(schema_for("Is the smile broad?")).is_valid
    assert ok({"label": "happiness", "ref": ["happiness1"], "note": ""})
    assert not ok({"label": "neutral", "ref": ["neutral1"], "note": ""})
    assert not ok({"label": None, "ref": ["happiness1"], "note": ""})
    for question in ("Is she smiling at second 3?", "Is she smiling or neutral?"):
        ok = Draft202012Validator(schema_for(question)).is_valid
        assert ok({"label": "neutral", "ref": ["neutral1"], "note": ""}), question


def test_a_question_naming_one_reading_opens_on_a_stretch_of_it():
    """"Is the person ever smiling?" is answered from a stretch of the smile first: SFT v8
    named fear for "Is she ever afraid?" and cited only brow and cheek events outside her
    two stretches of fear. Events may follow the stretch."""
    from jsonschema import Draft202012Validator

    reply = json.dumps({"label": "happiness", "ref": ["happiness1", SMILE_IDS[0]], "note": ""})
    be = ScriptedBackend([GOOD, reply])
    ans = chat(ChatSession.start(explain(A, backend=be), backend=be), "Is the person ever smiling?")
    ok = Draft202012Validator(be.batches[1][0].schema).is_valid
    assert not ans.fallback_used and ans.text.startswith("From 2.0 to 6.0 s")
    assert ok({"label": "happiness", "ref": ["happiness1", SMILE_IDS[0]], "note": ""})
    assert not ok({"label": "happiness", "ref": SMILE_IDS, "note": ""})
    assert not ok({"label": "happiness", "ref": [], "note": ""})


def test_when_a_reading_starts_or_stops_is_its_first_or_last_stretch():
    """On a face with two stretches of one reading, "when does it start?" opens on the first
    and "when does it stop?" on the last: v8 answered "When is he no longer frowning
    angrily?" with the longest stretch of anger, not the last one (session 14's held-out
    follow-ups)."""
    from jsonschema import Draft202012Validator

    from finetune.data import synthetic

    for seed in range(200):
        a, (ex, *_) = synthetic.make_clip(seed, long_share=1.0)
        f = ev.facts(a, a.track(ex.track_id))
        by = {}
        for i, x in f.segments.items():
            by.setdefault(x.label, []).append(i)
        twice = [(lab, ids) for lab, ids in by.items() if len(ids) >= 2 and lab in ("happiness", "sadness")]
        if twice:
            break
    else:
        raise AssertionError("no synthetic face smiles or cries twice")
    lab, (first, *_, last) = twice[0]
    verb = {"happiness": "smiling", "sadness": "crying"}[lab]

    def ok_for(question: str):
        be = ScriptedBackend([json.dumps({"label": lab, "ref": [first], "note": ""})])
        task = answer_task(a, ex.track_id, question, None)
        run_tasks([task], be)
        return Draft202012Validator(be.batches[0][0].schema["anyOf"][0]).is_valid

    start = ok_for(f"When does the person start {verb}?")
    assert start({"label": lab, "ref": [first], "note": ""}) and not start({"label": lab, "ref": [last], "note": ""})
    stop = ok_for(f"When does the person stop {verb}?")
    assert stop({"label": lab, "ref": [last], "note": ""}) and not stop({"label": lab, "ref": [first], "note": ""})
    any_ = ok_for(f"Is the person {verb} broadly?")
    assert any_({"label": lab, "ref": [last], "note": ""}) and any_({"label": lab, "ref": [first], "note": ""})


def test_a_reading_the_face_never_shows_is_said_to_be_absent():
    """"Does the person look angry at any point?" on a face that only rests and smiles: the
    answer names no reading, says no stretch reads as anger and what holds longest, and
    cites that stretch; by the model (the schema leaves it nothing else) as by the rules.
    SFT v8 answered the question on WolfgangLanger_Pexels.mp4 with the record label anger."""
    from jsonschema import Draft202012Validator

    q = "Does the person look angry at any point?"
    never = "No stretch of this face reads as anger; happiness holds longest."
    reply = json.dumps({"label": None, "ref": ["happiness1"], "note": never})
    be = ScriptedBackend([GOOD, reply])
    ans = chat(ChatSession.start(explain(A, backend=be), backend=be), q)
    ok = Draft202012Validator(be.batches[1][0].schema).is_valid
    assert not ans.fallback_used and ans.answered_by == "model" and not ans.withheld
    assert ans.text.startswith(never) and "(happiness, p=" in ans.text
    assert not ok({"label": "anger", "ref": ["happiness1"], "note": never})
    assert not ok({"label": None, "ref": ["neutral1"], "note": never})
    assert not ok({"label": None, "ref": [], "note": never})
    assert not ok({"label": None, "ref": ["happiness1"], "note": ""})
    rules = chat(ChatSession.start(explain(A, backend="engine"), backend="engine"), q)
    assert rules.answered_by == "engine" and rules.text == ans.text
    assert rules.record == {"label": None, "ref": ["happiness1"], "note": never}
    # a reading the face shows, or a moment asked about, keeps its own answer
    s = ChatSession.start(explain(A, backend="engine"), backend="engine")
    assert chat(s, "Is the person ever smiling?").record["label"] == "happiness"
    assert chat(s, "Is the person angry at 3 s?").text.startswith("At 3.0 s")


def test_the_reasons_for_a_reading_are_its_own_pattern():
    """"Why happiness?" is answered from happiness's stretches and the events of its EMFACS
    pattern (AU06, AU12), not a blink (AU45); "why not" questions are not narrowed."""
    from jsonschema import Draft202012Validator

    blink = next(i for i, e in F0.events.items() if e.au == "AU45")
    be = ScriptedBackend([GOOD, json.dumps({"label": "happiness", "ref": SMILE_IDS[:1], "note": ""})])
    ans = chat(ChatSession.start(explain(A, backend=be), backend=be), "Why happiness?")
    ok = Draft202012Validator(be.batches[1][0].schema).is_valid
    assert not ans.fallback_used and ok({"label": "happiness", "ref": SMILE_IDS, "note": ""})
    assert not ok({"label": "happiness", "ref": [blink], "note": ""})
    assert not ok({"label": "neutral", "ref": ["neutral1"], "note": ""})
    be = ScriptedBackend([GOOD, json.dumps({"label": "happiness", "ref": [blink], "note": ""})])
    chat(ChatSession.start(explain(A, backend=be), backend=be), "Why not surprise?")
    assert Draft202012Validator(be.batches[1][0].schema).is_valid({"label": "happiness", "ref": [blink], "note": ""})


def test_chat_without_a_usable_reply_answers_from_the_rules():
    be = ScriptedBackend([GOOD, "{not json", "still not json"])
    s = ChatSession.start(explain(A, backend=be), backend=be)
    ans = chat(s, "what happens at second 3?")
    assert ans.fallback_used and ans.fallback_reason
    assert ans.text.startswith("At 3.0 s") and not ans.text.lstrip().startswith("{")
    assert any(abs(t - 3.0) <= 0.5 for t in ans.cited_times)


def test_the_rules_compare_two_moments_a_question_names():
    # A question with two times asks how the face changes between them: both are reported,
    # not only the first one.
    s = ChatSession.start(explain(A, backend="engine"), backend="engine")
    ans = chat(s, "How does the face change between 1 s and 3 s?")
    assert ans.text.startswith("From 1.0 s to 3.0 s") and sorted(ans.cited_times) == [1.0, 3.0]
    assert "AU" in ans.text or "barely changes" in ans.text


def test_the_rules_answer_why_not_with_where_that_reading_was_seen():
    # "Why not surprise?" was answered with the longest segment, as if nothing was asked.
    s = ChatSession.start(explain(A, backend="engine"), backend="engine")
    held = max(F0.segments.values(), key=lambda x: x.end - x.start)
    seen = [x for x in F0.segments.values() if x.label != held.label]
    assert seen, "the synthetic face needs a second reading"
    other = seen[0]
    ans = chat(s, f"Why not {other.label}?")
    assert ans.record["label"] == held.label and not ans.withheld
    assert ans.text.startswith(f"{other.label.capitalize()} leads only in brief stretches")
    assert f"({other.label}, p=" in ans.text and f"({held.label}, p=" in ans.text
    assert round(other.start, 1) in [round(t, 1) for t in ans.cited_times]
    never = chat(s, "Why isn't the person angry?")
    assert never.text.startswith("No stretch of this face reads as anger") and not never.withheld


def test_the_rules_backend_decides_and_answers_without_a_model(monkeypatch, tmp_path):
    from agent import models
    from agent.backends import RulesBackend, make_backend, resolve_backend

    r = explain(A, backend="engine")
    (e,) = r.explanations
    assert e.decided_by == "engine" and not e.fallback_used and r.model == "exp-cot-engine"
    assert e.decision == engine.decide(A, A.tracks[0]).model_dump()
    s = ChatSession.start(r, backend="engine")
    ans = chat(s, "What happens at second 3?")
    assert ans.answered_by == "engine" and not ans.fallback_used and ans.text.startswith("At 3.0 s")
    # "auto" takes the shipped adapter when there is one, and the rules (never the untrained
    # base model) when there is none.
    monkeypatch.delenv(models.ENV_ADAPTER, raising=False)
    monkeypatch.setattr(models, "DEFAULT_ADAPTER", tmp_path / "not-shipped")
    assert resolve_backend("auto") == "engine" and isinstance(make_backend("auto"), RulesBackend)
    assert resolve_backend("auto", model="some/model") == "transformers"
    assert resolve_backend("openai") == "openai"
    # An adapter shipped opt-in (it failed the ship rule) is used only when asked for.
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "adapter_config.json").write_text("{}")
    monkeypatch.setattr(models, "DEFAULT_ADAPTER", shipped)
    (shipped / "ship.json").write_text('{"default": false, "reasons": ["real: label 0.50 < 0.67"]}')
    assert resolve_backend("auto") == "engine" and resolve_backend("transformers") == "transformers"
    assert models.resolve_adapter(None, None) == str(shipped)  # --backend transformers uses it
    (shipped / "ship.json").write_text('{"default": true, "reasons": []}')
    assert resolve_backend("auto") == "transformers" and resolve_backend("auto", adapter="none") == "engine"


def test_the_chat_follows_the_model_only_where_its_own_ship_rule_lets_it(monkeypatch, tmp_path):
    """An explanation the shipped model wrote is discussed with that model only when the
    adapter's ship.json also says it passed the chat rule; otherwise the rules answer."""
    from agent import models

    monkeypatch.delenv(models.ENV_ADAPTER, raising=False)
    monkeypatch.setattr(models, "DEFAULT_ADAPTER", tmp_path)
    r = explain(A, backend="engine")
    by_model = r.model_copy(update={"backend": "transformers"})
    for verdict, expected in [({"default": True, "chat": True}, "transformers"),
                              ({"default": True, "chat": False}, "engine"),
                              ({"default": True}, "engine"),  # shipped before the chat had a rule
                              ({"default": False, "chat": True}, "engine")]:
        (tmp_path / "ship.json").write_text(json.dumps(verdict))
        assert ChatSession.start(by_model).backend_spec["backend"] == expected, verdict
        assert ChatSession.start(r).backend_spec["backend"] == "engine"
    # Asked for by name, the model answers.
    assert ChatSession.start(by_model, backend="transformers").backend_spec["backend"] == "transformers"
