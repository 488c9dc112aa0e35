"""The agent graph's routing on crafted model outputs: tool rounds, one repair, fallback.

`ScriptedBackend` replays crafted assistant turns (the issue's "crafted model
outputs") through the real graph, toolbox, parser and faithfulness check; the
real models run in test_agent_e2e.py, test_agent_openai.py and test_agent_vlm.py.
"""

from __future__ import annotations

import json

from agent_synthetic import make_analysis, no_face_analysis

from agent import engine, explain
from agent.backends import Backend, BackendError, Generation
from agent.graph import MAX_TOOL_ROUNDS, format_gate

A = make_analysis(faces=1)
GOOD = engine.explain_track(A, A.tracks[0], seed=5).to_text()
CALL = '<tool_call>\n{"name": "time_window", "arguments": {"start": 2.5, "end": 3.5}}\n</tool_call>'


class ScriptedBackend(Backend):
    name = "scripted"
    model_id = "scripted"

    def __init__(self, replies: list[str | Exception]):
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def generate(self, messages, *, tools=None, images=None, max_new_tokens=512, on_token=None,
                 stop_check=None, temperature=0.0, seed=0) -> Generation:
        self.seen.append([dict(m) for m in messages])
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        text, stopped = "", False
        for word in reply.split(" "):  # stream word by word through the same gate
            piece = word if not text else " " + word
            text += piece
            if on_token:
                on_token(piece)
            if stop_check and stop_check(text):
                stopped = True
                break
        return Generation(text=text, n_tokens=len(text.split()), seconds=0.01, stopped_early=stopped)


def test_direct_answer():
    be = ScriptedBackend([GOOD])
    r = explain(A, backend=be)
    (e,) = r.explanations
    assert not e.fallback_used and e.unfaithful_claims == []
    assert e.conclusion.label == "happiness"
    assert {x.label for x in e.evidence if x.kind == "event"} <= {o.au for o in e.key_observations}
    assert r.stats["turns"] == 1 and r.text.startswith("**Key Observations:**")


def test_tool_round_feeds_result_back():
    be = ScriptedBackend([CALL, GOOD])
    r = explain(A, backend=be)
    assert not r.explanations[0].fallback_used
    (call,) = r.stats["tool_calls"]
    assert call["name"] == "time_window" and "AU12" in call["result"]["aus_present"]
    tool_msg = be.seen[1][-1]
    assert tool_msg["role"] == "tool" and json.loads(tool_msg["content"]) == call["result"]


def test_malformed_call_gets_one_repair():
    be = ScriptedBackend(['<tool_call>{"name": "time_window", "arguments": {"start": 2.5,</tool_call>', GOOD])
    r = explain(A, backend=be)
    assert not r.explanations[0].fallback_used
    repair = be.seen[1][-1]
    assert repair["role"] == "user" and "malformed tool call" in repair["content"]


def test_two_failures_fall_back_to_engine():
    be = ScriptedBackend(["The expression of face 0 is a mix of emotions and stimuli " * 5,
                          "<tool_call>{oops}</tool_call>"])
    r = explain(A, backend=be, seed=2)
    (e,) = r.explanations
    assert e.fallback_used and "malformed tool call" in e.fallback_reason
    assert e.model_copy(update={"fallback_used": False, "fallback_reason": None}) == \
        engine.explain_track(A, A.tracks[0], seed=2)
    assert len(be.seen) == 2  # one try, one repair, no more


def test_off_format_turn_is_cut_short():
    be = ScriptedBackend(["I think the person is happy because they smile a lot and it shows " * 20, GOOD])
    r = explain(A, backend=be)
    first = r.stats["generations"][0]
    assert first["stopped_early"] and first["tokens"] < 20
    assert not r.explanations[0].fallback_used


def test_unfaithful_answer_is_flagged_not_replaced():
    bad = GOOD.replace("**Key Observations:**",
                       "**Key Observations:**\n- AU04 (brow lowerer), intensity 3.0, 1.0-2.0 s: suggests anger.")
    r = explain(A, backend=ScriptedBackend([bad]))
    (e,) = r.explanations
    assert not e.fallback_used
    assert any("AU04" in c for c in e.unfaithful_claims)
    assert r.unfaithful_count == len(e.unfaithful_claims)


def test_tool_rounds_are_bounded():
    be = ScriptedBackend([CALL] * (MAX_TOOL_ROUNDS + 1) + [GOOD])
    r = explain(A, backend=be)
    assert len(r.stats["tool_calls"]) == MAX_TOOL_ROUNDS
    assert not r.explanations[0].fallback_used  # answered after the "answer now" repair


def test_backend_error_falls_back():
    r = explain(A, backend=ScriptedBackend([BackendError("the server timed out after 1 s")]))
    (e,) = r.explanations
    assert e.fallback_used and "timed out" in e.fallback_reason


def test_two_faces_one_explanation_each():
    a = make_analysis(faces=2)
    good1 = engine.explain_track(a, a.tracks[1], seed=1).to_text()
    r = explain(a, backend=ScriptedBackend([GOOD, good1]))
    assert [e.track_id for e in r.explanations] == [0, 1]
    assert r.explanations[1].conclusion.label == "surprise"
    assert "### Face 0" in r.text and "### Face 1" in r.text


def test_no_face_is_a_result():
    r = explain(no_face_analysis(), backend=ScriptedBackend([]))
    assert r.explanations == [] and "No face" in r.text and r.message


def test_format_gate():
    assert not format_gate("**Key Observations:**\n- AU12 (lip corner puller) " * 3)
    assert format_gate("The expression of face 0 is a mix of emotions, truly a mix.")
    assert not format_gate("<tool_call>\n{\"name\": \"time_window\", ")
    assert format_gate(CALL)


def test_chat_replaces_echoed_tool_markup_with_a_grounded_answer():
    """A small model sometimes parrots the tool result back; the user must get prose."""
    from agent import ChatSession, chat

    echo = '<tool_response> {"name": "time_window", "arguments": {"start": 2.5, "end": 3.5}}'
    be = ScriptedBackend([GOOD, echo])
    s = ChatSession.start(explain(A, backend=be), backend=be)
    ans = chat(s, "what happens at second 3?")
    assert ans.fallback_used and "<tool" not in ans.text and not ans.text.lstrip().startswith("{")
    assert ans.tool_calls and ans.tool_calls[0]["name"] == "time_window"
    assert any(abs(t - 3.0) <= 0.5 for t in ans.cited_times)
