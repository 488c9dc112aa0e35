"""The `openai` backend against a real HTTP server on 127.0.0.1 (tests/openai_server.py):
streaming, text and structured tool calls, retries, timeouts and garbage."""

from __future__ import annotations

import json
import time

import pytest
from agent_synthetic import make_analysis
from openai_server import OpenAITestServer

from agent import ChatSession, chat, explain
from agent import evidence as ev
from agent.backends import BackendError
from agent.decision import Decision
from agent.openai_backend import OpenAIBackend

A = make_analysis(faces=1)
F0 = ev.facts(A, A.track(0))
GOOD = Decision(label="happiness", conf=0.8, cite=[i for i, e in F0.events.items() if e.au == "AU12"],
                arc=["neutral1", "happiness1"]).to_json()
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
        assert "response_format" not in req  # no schema asked for, none sent


def test_the_record_schema_goes_out_as_structured_output():
    call = json.dumps({"tool": "list_events", "args": {"au": "AU12"}})
    with OpenAITestServer([call, GOOD]) as srv:
        r = explain(A, backend="openai", base_url=srv.base_url, model="served-name")
        (e,) = r.explanations
        assert not e.fallback_used and e.unfaithful_claims == []
        assert r.backend == "openai" and r.model == "served-name"
        assert r.stats["tool_calls"][0]["result"]["events"][0]["au"] == "AU12"
        first, second = srv.requests
        fmt = first["response_format"]
        assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
        decision, tools = fmt["json_schema"]["schema"]["anyOf"]
        branches = decision["anyOf"]  # one per label, the note among that label's remarks
        assert [b["properties"]["label"]["const"] for b in branches] == A.emotion_labels
        assert all(b["properties"]["arc"]["items"]["enum"] == list(F0.segments) for b in branches)
        # The tool result went back as a user turn wrapped in <tool_response>.
        last = second["messages"][-1]
        assert last["role"] == "user" and last["content"].startswith("<tool_response>")
        assert all(g["constrained"] for g in r.stats["generations"])


def test_a_server_without_structured_output_gets_the_schema_in_the_prompt():
    with OpenAITestServer(["The face smiles.", GOOD], mode="no_structured") as srv:
        be = OpenAIBackend(base_url=srv.base_url, model="m")
        r = explain(A, backend=be)
        (e,) = r.explanations
        assert not e.fallback_used  # the first, unusable reply got one repair
        assert be.structured is False
        refused, *later = srv.requests
        assert "response_format" in refused and not any("response_format" in q for q in later)
        assert "follows this JSON schema" in later[0]["messages"][0]["content"]
        assert "could not be used" in later[1]["messages"][-1]["content"]
        assert not any(g["constrained"] for g in r.stats["generations"])


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


def test_chat_through_server():
    call = json.dumps({"tool": "moment", "args": {"t": 3}})
    answer = json.dumps({"ref": ["W1"], "label": "happiness", "note": "The person is smiling there."})
    unfaithful = json.dumps({"ref": ["W1"], "label": "anger", "note": "AU04 shows a frown."})
    with OpenAITestServer([call, answer, call, unfaithful]) as srv:
        s = ChatSession.start(A, backend="openai", base_url=srv.base_url)
        a1 = chat(s, "what happens at second 3?")
        assert not a1.fallback_used and a1.cited_times == [3.0] and a1.frame_time == 3.0
        assert a1.text.startswith("The person is smiling there. At 3.0 s")
        # The model was shown that moment's numbers before it answered.
        sent = srv.requests[1]["messages"]
        assert sent[-1]["content"].startswith("<tool_response>") and "AU12" in sent[-1]["content"]
        a2 = chat(s, "and is there a frown at 3 s?")
        # AU04 was never measured: the model's sentence is withheld, the measured facts remain.
        assert a2.withheld and "AU04" not in a2.text and "AU12" in a2.text
        assert len(s.history) == 2
        assert "and is there a frown at 3 s?" in srv.requests[2]["messages"][1]["content"]


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
