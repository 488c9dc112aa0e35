"""The LLM judge against a real HTTP server on 127.0.0.1; the offline judge against hand labels."""

from __future__ import annotations

import pytest
from evals_fake_llm import FakeLLM

from evals.agreement import agreement
from evals.judges import JudgeError, make_judge
from evals.llm_judge import LLMJudge
from evals.metrics import autodq, tem
from evals.offline_judge import OfflineJudge, split_clauses

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
        # ... sized to the request: two events get exactly two relations, three matches
        # index 1..3 with a match in 0..2, so an enforcing server cannot miscount.
        from jsonschema import Draft202012Validator

        rel = Draft202012Validator(srv.requests[1]["response_format"]["json_schema"]["schema"])
        one = {"index": 1, "relationship": "entailment", "reason": "r"}
        assert rel.is_valid({"relations": [one, {**one, "index": 2}]})
        assert not rel.is_valid({"relations": [one]})
        assert not rel.is_valid({"relations": [one, {**one, "index": 3}]})
        mat = Draft202012Validator(srv.requests[2]["response_format"]["json_schema"]["schema"])
        assert mat.is_valid({"matches": [{"index": i, "match": m} for i, m in ((1, 2), (2, 1), (3, 0))]})
        assert not mat.is_valid({"matches": [{"index": 1, "match": 3}, {"index": 2, "match": 1},
                                             {"index": 3, "match": 0}]})


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


def test_short_clauses_with_a_facial_action_are_events(offline):
    assert offline.extract_events("She frowns. She waves.") == ["she frowns"]
    assert offline.extract_events("The man frowns. Then he smiles.") == ["the man frowns", "later, the man smiles"]


def test_lexicon_reads_actions_emotions_and_negation():
    from evals.facial import read

    assert read("she smiles broadly").aus == {"AU06", "AU12"}
    assert read("he grins").aus == {"AU12"} and read("he grins").labels == {"happiness"}
    assert read("she knits her brows").aus == {"AU04"}
    assert read("her lip corners pulled down").aus == {"AU15"}
    assert read("he raises his eyebrows").aus == {"AU01", "AU02"}
    assert read("he wrinkles his nose").aus == {"AU09"}
    assert read("she drops her jaw").aus >= {"AU26"}
    assert read("she presses her lips").aus == {"AU24"}
    assert read("she closes her eyes").aus == {"AU43"}
    assert read("the woman sobs").labels == {"sadness"}
    for negated in ("she is no longer smiling", "she stops smiling", "she looks on without a smile",
                    "her smile fades", "she doesn't smile"):
        r = read(negated)
        assert not r.aus and "AU12" in r.not_aus and "happiness" in r.not_labels, negated
    assert read("she stops crying").not_labels == {"sadness"}


def test_offline_judge_emotion_and_time_rules(offline):
    cap = ("at the beginning, the woman cries with her brows knitted. "
           "towards the end, she grins and laughs.")
    events = ["at the beginning, the woman laughs", "towards the end, the woman sobs",
              "towards the end, the woman smiles widely", "at the beginning, the woman raises her eyebrows",
              "towards the end, she is no longer smiling", "the woman cries and then laughs",
              "the woman laughs and then cries", "the man laughs"]
    assert [r.label for r in offline.classify(events, cap)] == [
        "contradiction", "contradiction", "entailment", "contradiction",
        "contradiction", "entailment", "contradiction", "neutral"]


def test_offline_judge_agreement_on_held_out_media_labels(offline):
    """Pairs written from frames of the real test media; never used for tuning (docs/evals.md)."""
    a = agreement(offline, "tests/data/evals_relations_heldout.json")
    assert a["n"] >= 60
    assert a["per_class"]["contradiction"]["recall"] >= 0.8
    assert a["accuracy"] >= 0.85 and a["kappa"] >= 0.7
