"""The `openai` backend against a real HTTP server on 127.0.0.1 (tests/openai_server.py):
streaming, text and structured tool calls, retries, timeouts and garbage."""

from __future__ import annotations

import json
import time

import pytest
from agent_synthetic import make_analysis
from openai_server import OpenAITestServer

from agent import ChatSession, chat, engine, explain
from agent.backends import BackendError, OpenAIBackend

A = make_analysis(faces=1)
GOOD = engine.explain_track(A, A.tracks[0], seed=7).to_text()
MSGS = [{"role": "user", "content": "hi"}]


def test_streaming_tokens_arrive_in_pieces():
    with OpenAITestServer([GOOD]) as srv:
        be = OpenAIBackend(base_url=srv.base_url)
        assert be.model_id == "test-model"  # discovered from /v1/models
        pieces: list[str] = []
        g = be.generate(MSGS, on_token=pieces.append, max_new_tokens=77)
        assert "".join(pieces) == g.text == GOOD
        assert len(pieces) > 10 and g.ttft is not None and g.ttft <= g.seconds
        req = srv.requests[0]
        assert req["stream"] is True and req["max_tokens"] == 77 and req["model"] == "test-model"
        assert "tools" not in req  # text tool format by default


def test_explain_through_server_with_text_tool_call():
    call = '<tool_call>\n{"name": "list_events", "arguments": {"au": "AU12"}}\n</tool_call>'
    with OpenAITestServer([call, GOOD]) as srv:
        r = explain(A, backend="openai", base_url=srv.base_url, model="served-name")
        (e,) = r.explanations
        assert not e.fallback_used and e.unfaithful_claims == []
        assert r.backend == "openai" and r.model == "served-name"
        assert r.stats["tool_calls"][0]["result"]["events"][0]["au"] == "AU12"
        # The tool result went back as a user turn wrapped in <tool_response>.
        last = srv.requests[1]["messages"][-1]
        assert last["role"] == "user" and last["content"].startswith("<tool_response>")
        assert "<tools>" in srv.requests[0]["messages"][0]["content"]


def test_native_structured_tool_calls():
    structured = {"tool_calls": [{"id": "c7", "type": "function", "function": {
        "name": "time_window", "arguments": json.dumps({"start": 2.5, "end": 3.5})}}]}
    with OpenAITestServer([structured, GOOD]) as srv:
        be = OpenAIBackend(base_url=srv.base_url, native_tools=True)
        r = explain(A, backend=be)
        assert not r.explanations[0].fallback_used
        assert r.stats["tool_calls"][0]["name"] == "time_window"
        first, second = srv.requests
        assert [t["function"]["name"] for t in first["tools"]][0] == "time_window"
        assert "<tools>" not in first["messages"][0]["content"]
        tool_msg = second["messages"][-1]
        assert tool_msg["role"] == "tool" and tool_msg["tool_call_id"] == "c7"
        assert second["messages"][-2]["tool_calls"][0]["id"] == "c7"


def test_retries_then_succeeds():
    with OpenAITestServer([GOOD], mode="fail_then_ok", failures=2) as srv:
        be = OpenAIBackend(base_url=srv.base_url, model="m", retries=2)
        assert be.generate(MSGS).text == GOOD
        assert len(srv.requests) == 3


def test_gives_up_after_retries():
    with OpenAITestServer([GOOD], mode="fail_then_ok", failures=5) as srv:
        be = OpenAIBackend(base_url=srv.base_url, model="m", retries=1)
        with pytest.raises(BackendError, match="HTTP 503"):
            be.generate(MSGS)
        assert len(srv.requests) == 2


def test_timeout_is_a_clear_error_and_explain_falls_back():
    with OpenAITestServer([GOOD], mode="slow", delay=2.0) as srv:
        be = OpenAIBackend(base_url=srv.base_url, model="m", timeout=0.3, retries=0)
        t0 = time.perf_counter()
        with pytest.raises(BackendError, match="timed out after 0.3 s"):
            be.generate(MSGS)
        assert time.perf_counter() - t0 < 1.5
        r = explain(A, backend=be)
        assert r.explanations[0].fallback_used and "timed out" in r.explanations[0].fallback_reason


@pytest.mark.parametrize("mode", ["garbage", "garbage_stream"])
def test_garbage_is_a_clear_error(mode):
    with OpenAITestServer([GOOD], mode=mode) as srv:
        be = OpenAIBackend(base_url=srv.base_url, model="m", retries=0)
        with pytest.raises(BackendError, match="not JSON"):
            be.generate(MSGS)
        r = explain(A, backend=be)
        assert r.explanations[0].fallback_used


def test_server_ignoring_stream_flag():
    with OpenAITestServer([GOOD], mode="nostream") as srv:
        pieces: list[str] = []
        g = OpenAIBackend(base_url=srv.base_url, model="m").generate(MSGS, on_token=pieces.append)
        assert g.text == GOOD and pieces == [GOOD]


def test_unreachable_server_and_missing_url(monkeypatch):
    for var in ("FACEREASON_OPENAI_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(BackendError, match="needs a base URL"):
        OpenAIBackend()
    with OpenAITestServer() as srv:
        url = srv.base_url
    with pytest.raises(BackendError, match="cannot reach"):
        OpenAIBackend(base_url=url, model="m", retries=0).generate(MSGS)


def test_chat_through_server_is_grounded():
    with OpenAITestServer(["At 3 s face 0 smiles: AU12 and AU06 are active.",
                           "At 3 s face 0 shows AU04, a frown."]) as srv:
        s = ChatSession.start(A, backend="openai", base_url=srv.base_url)
        a1 = chat(s, "what happens at second 3?")
        assert not a1.fallback_used and a1.cited_times == [3.0] and a1.frame_time == 3.0
        assert a1.tool_calls[0]["name"] == "time_window"  # looked before answering
        # The model was shown that window's numbers.
        sent = srv.requests[0]["messages"]
        assert any("<tool_response>" in m["content"] and "AU12" in m["content"] for m in sent)
        a2 = chat(s, "and is there a frown at 3 s?")
        # AU04 was never measured: the answer is replaced by one written from the tools.
        assert a2.fallback_used and "AU04" not in a2.text and "AU12" in a2.text
        assert len(s.history) == 4
        assert srv.requests[1]["messages"][2]["content"] == "what happens at second 3?"


def test_cli_explain_with_openai_backend(tmp_path, capsys, media):
    from agent.cli import main

    with OpenAITestServer([GOOD]) as srv:
        out = tmp_path / "r.json"
        rc = main(["explain", str(media("single_face.jpg")), "--backend", "openai",
                   "--base-url", srv.base_url, "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr()
    assert "**Key Observations:**" in printed.out and "**Caption:**" in printed.out
    data = json.loads(out.read_text())
    assert data["backend"] == "openai" and len(data["explanations"]) >= 1
