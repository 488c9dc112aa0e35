"""Tool-call parsing on crafted model outputs, and the tools' answers against the series."""

from __future__ import annotations

import json

import numpy as np
import pytest
from agent_synthetic import make_analysis

from agent.toolbox import Toolbox, ToolCall, ToolError, parse_tool_calls, schemas
from tools.facs import AU_CODES


def test_hermes_blocks_are_parsed():
    text = ('Let me check.\n<tool_call>\n{"name": "time_window", "arguments": {"start": 1, "end": 2}}\n'
            '</tool_call>\n<tool_call>{"name": "list_events", "arguments": {"au": "AU12"}}</tool_call>')
    p = parse_tool_calls(text)
    assert not p.malformed
    assert [(c.name, c.arguments) for c in p.calls] == [
        ("time_window", {"start": 1, "end": 2}), ("list_events", {"au": "AU12"})]


@pytest.mark.parametrize("body,expected", [
    ('```json\n{"name": "inspect_face", "arguments": {"track_id": 1}}\n```', {"track_id": 1}),
    ('{"name": "inspect_face", "arguments": "{\\"track_id\\": 1}"}', {"track_id": 1}),
    ('{"name": "inspect_face", "parameters": {"track_id": 1}} and then I will answer', {"track_id": 1}),
    ('{"name": "clip_context"}', {}),
])
def test_lenient_forms(body, expected):
    p = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert not p.malformed, p.errors
    assert p.calls[0].arguments == expected


def test_unclosed_block_still_parses():
    p = parse_tool_calls('<tool_call>\n{"name": "clip_context", "arguments": {}}')
    assert [c.name for c in p.calls] == ["clip_context"]


@pytest.mark.parametrize("body,needle", [
    ('{"name": "time_window", "arguments": {"start": 1,', "not valid JSON"),
    ('["time_window", 1, 2]', "not a JSON object"),
    ('{"arguments": {"start": 1}}', "no \"name\""),
    ('{"name": "time_window", "arguments": "{start: 1}"}', "arguments are not valid JSON"),
    ('{"name": "time_window", "arguments": [1, 2]}', "must be an object"),
])
def test_malformed_calls_are_reported(body, needle):
    p = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert p.malformed
    assert needle in p.errors[0]


def test_structured_openai_calls():
    structured = [{"id": "c1", "type": "function",
                   "function": {"name": "compare_moments", "arguments": '{"t1": 1, "t2": 3}'}}]
    p = parse_tool_calls("", structured)
    assert p.calls[0].id == "c1" and p.calls[0].arguments == {"t1": 1, "t2": 3}


def test_plain_answer_has_no_calls():
    assert parse_tool_calls("**Key Observations:**\n- AU12 ...").calls == []


def test_schemas_match_toolbox_methods():
    names = [s["function"]["name"] for s in schemas()]
    assert names == ["time_window", "compare_moments", "inspect_face", "clip_context", "list_events"]
    for n in names:
        assert callable(getattr(Toolbox, n))


def test_time_window_matches_series():
    a = make_analysis(faces=2)
    box = Toolbox(a, default_track=0)
    out = box.call(ToolCall("time_window", {"start": 3.0, "end": 4.0}))
    t = a.track(0)
    rows = (t.timestamps >= 3.0) & (t.timestamps <= 4.0)
    k = AU_CODES.index("AU12")
    assert out["frames"] == int(rows.sum())
    assert out["aus_present"]["AU12"] == pytest.approx(float(t.aus[rows, k].mean()), abs=0.01)
    assert "AU26" not in out["aus_present"]  # face 1's AU, not face 0's
    assert next(iter(out["emotions"])) == "happiness"
    assert out["valence"] == pytest.approx(float(t.valence[rows].mean()), abs=0.01)
    other = box.call(ToolCall("time_window", {"start": 2.2, "end": 3.0, "track_id": 1}))
    assert {"AU01", "AU02", "AU26"} <= set(other["aus_present"])


def test_compare_moments_sign():
    a = make_analysis(faces=1)
    out = Toolbox(a).call(ToolCall("compare_moments", {"t1": 0.5, "t2": 3.0}))
    assert out["au_change"]["AU12"] > 1.0
    assert out["emotion_change"]["happiness"] > 0.3
    assert out["valence_change"] > 0


def test_list_events_filters():
    a = make_analysis(faces=1)
    box = Toolbox(a)
    allev = box.call(ToolCall("list_events", {}))
    assert [e["au"] for e in allev["events"]] == ["AU45", "AU12", "AU06"]
    only = box.call(ToolCall("list_events", {"au": "au12"}))
    assert [e["au"] for e in only["events"]] == ["AU12"]
    late = box.call(ToolCall("list_events", {"start": 5.4, "end": 6.0}))
    assert {e["au"] for e in late["events"]} == {"AU12", "AU06"}


def test_inspect_face_and_context_offline():
    a = make_analysis(faces=2)
    box = Toolbox(a)
    f = box.call(ToolCall("inspect_face", {"track_id": 1}))
    assert [s["label"] for s in f["segments"]] == ["neutral", "surprise", "neutral"]
    assert f["other_faces"] == [0]
    ctx = box.call(ToolCall("clip_context", {}))
    assert ctx["status"] == "off"  # no path to score and nothing scored: says so


@pytest.mark.parametrize("call,needle", [
    (ToolCall("look_closer", {}), "unknown tool"),
    (ToolCall("time_window", {"start": 1}), "missing argument(s) end"),
    (ToolCall("time_window", {"start": "soon", "end": 2}), "must be a number"),
    (ToolCall("time_window", {"start": 1, "end": 2, "face": 0}), "unknown argument(s) face"),
    (ToolCall("inspect_face", {"track_id": 9}), "no face track 9"),
])
def test_bad_calls_raise_and_run_reports(call, needle):
    box = Toolbox(make_analysis(faces=2))
    with pytest.raises(ToolError) as err:
        box.call(call)
    assert needle in str(err.value)
    assert needle in json.loads(box.run(call))["error"]


def test_window_outside_face_notes_it():
    out = Toolbox(make_analysis(faces=2)).call(
        ToolCall("time_window", {"start": 5.6, "end": 5.9, "track_id": 1}))
    assert "only visible" in out["note"]
    assert np.isfinite(out["valence"])
