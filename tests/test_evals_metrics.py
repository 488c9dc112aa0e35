"""Properties a correct caption metric must have, on FEC-style captions, with the real offline judge."""

from __future__ import annotations

import json

import pytest

from evals.metrics import autodq, cider, lcs_pairs, rouge_l, tem, tokenize
from evals.offline_judge import OfflineJudge

REF = ("At the beginning of the video, the woman looks down with a neutral expression. "
       "As the video progresses, she raises her eyebrows and her eyes widen in surprise. "
       "In the middle, she smiles broadly and nods her head. "
       "Towards the end, she frowns and looks disappointed.")
# the same sentences, markers included, in reverse text order: every event keeps its moment
REVERSED = ("Towards the end, she frowns and looks disappointed. "
            "In the middle, she smiles broadly and nods her head. "
            "As the video progresses, she raises her eyebrows and her eyes widen in surprise. "
            "At the beginning of the video, the woman looks down with a neutral expression.")
# the same events moved to other moments: a neutral start is now a frown, and so on
MOVED = ("At the beginning of the video, the woman frowns and looks disappointed. "
         "As the video progresses, she smiles broadly and nods her head. "
         "In the middle, she raises her eyebrows and her eyes widen in surprise. "
         "Towards the end, she looks down with a neutral expression.")
OPPOSITE = ("At the beginning of the video, the woman looks up with an angry expression. "
            "As the video progresses, she lowers her eyebrows and her eyes narrow in anger. "
            "In the middle, she frowns deeply and looks furious. "
            "Towards the end, she smiles happily and looks delighted.")


@pytest.fixture(scope="module")
def judge():
    return OfflineJudge()


def test_identical_captions_score_one(judge):
    assert autodq(REF, REF, judge).score == 1.0
    t = tem(REF, REF, judge)
    assert t.score == 1.0 and len(t.lcs) == len(t.ref_events) >= 4


def test_reversed_order_keeps_autodq_and_lowers_tem(judge):
    a, t = autodq(REVERSED, REF, judge), tem(REVERSED, REF, judge)
    assert a.score == pytest.approx(autodq(REF, REF, judge).score)
    assert t.score < 0.6 < a.score
    assert len(t.matches) > len(t.lcs)  # the events match; only their order is wrong


def test_events_moved_to_other_moments_lose_autodq(judge):
    """A frown at the start where the reference has a neutral face at the start is an error."""
    a = autodq(MOVED, REF, judge)
    # "as the video progresses" and "in the middle" are one part of the video to the judge,
    # so only the swap of the start and the end is seen
    assert a.score < 0.7
    assert any(r.label == "contradiction" for r in a.recall_relations)


HAPPY = ("At the beginning, the man smiles slightly. As the video progresses, his cheeks lift and he "
         "grins widely. In the middle, he laughs and looks delighted. Towards the end, he relaxes "
         "with a content smile.")
SAD = ("At the beginning, the man frowns slightly. As the video progresses, his lip corners drop and "
       "he looks miserable. In the middle, he cries and looks upset. Towards the end, he stays tense "
       "with a gloomy frown.")


def test_opposite_emotions_score_near_zero(judge):
    a = autodq(SAD, HAPPY, judge)
    assert a.score <= 0.25
    assert any(r.label == "contradiction" for r in a.recall_relations)
    assert tem(SAD, HAPPY, judge).score <= 0.25


@pytest.mark.parametrize("pred", ["", "   ", "happy", "Sad."])
def test_empty_or_one_word_prediction_scores_zero(judge, pred):
    assert autodq(pred, REF, judge).score == 0.0
    assert tem(pred, REF, judge).score == 0.0
    assert rouge_l(pred, REF) < 0.05


def test_scores_are_symmetric(judge):
    ab, ba = autodq(REVERSED, REF, judge), autodq(REF, REVERSED, judge)
    assert ab.precision == ba.recall and ab.recall == ba.precision and ab.score == ba.score
    assert tem(OPPOSITE, REF, judge).score == pytest.approx(tem(REF, OPPOSITE, judge).score)


def test_evidence_is_returned(judge):
    a = autodq(OPPOSITE, REF, judge)
    assert len(a.recall_relations) == len(a.ref_events)
    assert all(r.evidence for r in a.recall_relations)
    json.dumps(a.to_dict())
    json.dumps(tem(OPPOSITE, REF, judge).to_dict())


def test_lcs_pairs():
    assert lcs_pairs(3, 3, {(0, 0), (1, 1), (2, 2)}) == [(0, 0), (1, 1), (2, 2)]
    assert len(lcs_pairs(3, 3, {(0, 2), (1, 1), (2, 0)})) == 1
    assert lcs_pairs(4, 3, {(0, 1), (1, 0), (2, 1), (3, 2)}) in ([(0, 1), (3, 2)], [(1, 0), (2, 1), (3, 2)])
    assert len(lcs_pairs(4, 3, {(0, 1), (1, 0), (2, 1), (3, 2)})) == 3
    assert lcs_pairs(0, 5, set()) == []


def test_tokenizer_reproduces_java_ptb_tokenizer():
    data = json.load(open("tests/data/evals_ptb_tokens.json"))
    for pair in data["pairs"]:
        assert tokenize(pair["text"]) == pair["ptb"]


def test_rouge_l_and_cider():
    assert rouge_l(REF, REF) == pytest.approx(1.0)
    assert rouge_l(REVERSED, REF) < 1.0
    refs = {"a": REF, "b": OPPOSITE, "c": REVERSED}
    corpus, per = cider({"a": REF, "b": REF, "c": ""}, refs)
    assert per["a"] > per["b"] > per["c"] == 0.0
    assert corpus == pytest.approx(sum(per.values()) / 3)
    # CIDEr needs a corpus: with one item every n-gram has zero idf
    assert cider({"a": REF}, {"a": REF})[0] == 0.0
