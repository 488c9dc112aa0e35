"""The LLM judge against a real HTTP server on 127.0.0.1; the offline judge against hand labels."""

from __future__ import annotations

import pytest
from evals_fake_llm import FakeLLM

from evals.agreement import agreement
from evals.judges import JudgeError, LLMJudge, OfflineJudge, make_judge, split_clauses
from evals.metrics import autodq, tem

REF = ("At the beginning, the woman looks down. As the video progresses, she raises her eyebrows. "
       "Towards the end, she smiles broadly.")


def test_llm_judge_parses_events_relations_and_matches(tmp_path):
    with FakeLLM() as srv:
        judge = LLMJudge(srv.url, "judge-model", cache_path=tmp_path / "c.sqlite", backoff_s=0)
        events = judge.extract_events(REF.lower())
        assert events == ["the woman looks down", "she raises her eyebrows", "she smiles broadly"]
        rels = judge.classify(["she smiles broadly", "the man cries"], REF.lower())
        assert [r.label for r in rels] == ["entailment", "neutral"]
        assert judge.align(["b", "a", "z"], ["a", "b"]) == [1, 0, None]
        # JSON-constrained: the request carries a json_schema response format
        assert srv.requests[0]["response_format"]["type"] == "json_schema"
        assert srv.requests[0]["temperature"] == 0.0


def test_llm_judge_retries_500_and_garbage_then_caches(tmp_path):
    cache = tmp_path / "c.sqlite"
    with FakeLLM(script=["500", "garbage", "fence"]) as srv:
        judge = LLMJudge(srv.url, "judge-model", cache_path=cache, backoff_s=0, max_retries=3)
        events = judge.extract_events(REF.lower())
        assert len(events) == 3
        assert judge.requests_sent == 3  # 500, garbage, then a fenced JSON answer that parses
        first = autodq(REF, REF, judge)
        sent = len(srv.requests)
        judge.close()
        # a second run with the same judge, prompts and inputs costs no request at all
        again = LLMJudge(srv.url, "judge-model", cache_path=cache, backoff_s=0)
        second = autodq(REF, REF, again)
        assert again.requests_sent == 0 and len(srv.requests) == sent
        assert second.to_dict() == first.to_dict()
        assert first.score == 1.0
        # another judge model is another cache key
        other = LLMJudge(srv.url, "other-model", cache_path=cache, backoff_s=0)
        other.extract_events(REF.lower())
        assert other.requests_sent == 1


def test_llm_judge_gives_up_with_a_clear_error():
    with FakeLLM(script=["500"] * 10) as srv:
        judge = LLMJudge(srv.url, "m", backoff_s=0, max_retries=2)
        with pytest.raises(JudgeError, match="after 3 tries"):
            judge.extract_events("the woman smiles.")
        assert judge.requests_sent == 3
    with FakeLLM(script=["400"]) as srv:
        judge = LLMJudge(srv.url, "m", backoff_s=0)
        with pytest.raises(JudgeError, match="HTTP 400"):
            judge.extract_events("the woman smiles.")
        assert judge.requests_sent == 1  # a refusal is not retried


def test_llm_judge_tem_detects_reordering():
    rev = ("At the beginning, she smiles broadly. As the video progresses, she raises her eyebrows. "
           "Towards the end, the woman looks down.")
    with FakeLLM() as srv:
        judge = LLMJudge(srv.url, "m", backoff_s=0)
        assert autodq(rev, REF, judge).score == 1.0
        t = tem(rev, REF, judge)
        assert t.score == pytest.approx(1 / 3)
        assert len(t.lcs) == 1 and len(t.matches) == 3


def test_make_judge_rejects_bad_settings():
    with pytest.raises(JudgeError, match="base-url"):
        make_judge("llm", model="m")
    with pytest.raises(JudgeError, match="Unknown judge"):
        make_judge("gpt")
    with pytest.raises(JudgeError, match="http"):
        LLMJudge("localhost:8000", "m")


def test_clause_splitting_on_markers_and_conjunctions():
    clauses = split_clauses("At the beginning, the man frowns and shakes his head. "
                            "As the video progresses, he smiles, revealing his teeth, while his brows rise.")
    assert clauses == ["the man frowns", "the man shakes his head", "the man smiles",
                       "the man revealing his teeth", "his brows rise"]


@pytest.fixture(scope="module")
def offline():
    return OfflineJudge()


def test_offline_judge_rules(offline):
    cap = "the woman raises her eyebrows. then she smiles broadly."
    labels = [r.label for r in offline.classify(
        ["the woman lowers her eyebrows", "the woman frowns angrily", "the woman does not smile",
         "the woman smiles", "the man drives a car"], cap)]
    assert labels == ["contradiction", "contradiction", "contradiction", "entailment", "neutral"]


def test_offline_judge_agreement_with_hand_labels(offline):
    """Held-out labels; the thresholds were chosen on the dev file. docs/evals.md has the table."""
    a = agreement(offline, "tests/data/evals_relations_test.json")
    assert a["n"] >= 60
    assert a["accuracy"] >= 0.7
    assert a["kappa"] >= 0.4
    assert sum(map(sum, a["confusion"])) == a["n"]
