"""Reward functions on hand-written completions (finetune/rewards.py)."""

from __future__ import annotations

import pytest

from finetune import rewards as R

GOOD = """**Key Observations:**
- AU06 (cheek raiser), intensity 2.1, 2.2-5.2 s: suggests a felt smile.
- AU12 (lip corner puller), intensity 3.2, 2.0-5.5 s: suggests happiness.

**Overall Emotional Interpretation:**
Cheek raising with lip corner pulling is a Duchenne smile.

**Conclusion:**
The expression is best read as happiness (confidence 0.80; valence +0.50, arousal +0.10).

**Caption:**
At the beginning, the person looks calm and neutral. As the video progresses, a cheerful smile
appears. Towards the end, the person is still happy."""

# Headers shuffled, no caption, label outside the set.
BAD = """**Conclusion:**
Probably fine.
**Key Observations:**
- nothing much"""


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_format_reward_full_partial_and_conversational():
    scores = R.format_reward([GOOD, BAD, "", conv(GOOD)])
    assert scores[0] == 1.0 and scores[3] == 1.0
    assert scores[2] == 0.0
    # Only "Key Observations" after "Conclusion" counts as in order: one of four headers.
    assert scores[1] == pytest.approx(1 / 5)
    no_caption = GOOD.split("**Caption:**")[0]
    assert R.format_reward([no_caption])[0] == pytest.approx(3 / 5)


def test_label_reward():
    assert R.label_reward([GOOD, GOOD, BAD], label=["happiness", "sadness", "happiness"]) == [1.0, 0.0, 0.0]
    assert R.label_reward([GOOD], label=["Happiness"]) == [1.0]


def test_au_reward_is_two_f1_minus_one():
    # cited {AU06, AU12} vs true {AU06, AU12}: F1 1 -> 1
    assert R.au_reward([GOOD], aus=[["AU06", "AU12"]]) == [1.0]
    # vs true {AU12, AU25, AU26}: P 1/2, R 1/3, F1 0.4 -> -0.2
    assert R.au_reward([GOOD], aus=[["AU12", "AU25", "AU26"]])[0] == pytest.approx(-0.2)
    # nothing in common -> -1; nothing cited -> -1 (Facial-R1's rule)
    assert R.au_reward([GOOD], aus=[["AU04"]]) == [-1.0]
    no_aus = GOOD.replace("AU06", "cheeks").replace("AU12", "corners")
    assert R.au_reward([no_aus], aus=[["AU06"]]) == [-1.0]
    # a neutral truth: citing nothing is right, citing something is wrong
    assert R.au_reward([no_aus, GOOD], aus=[[], []]) == [1.0, -1.0]
    # tolerant of "AU 6" style codes in the column
    assert R.au_reward([GOOD], aus=[["AU 6", "AU12"]]) == [1.0]


def test_faithfulness_penalty():
    assert R.faithfulness_reward([GOOD], observed_aus=[["AU06", "AU12", "AU45"]]) == [0.0]
    assert R.faithfulness_reward([GOOD], observed_aus=[["AU12"]]) == [-0.5]
    assert R.faithfulness_reward([GOOD], observed_aus=[[]]) == [-1.0]
    assert R.faithfulness_reward([BAD], observed_aus=[[]]) == [0.0]


def test_caption_emotions_and_order():
    assert R.caption_emotions("At first calm. Then a cheerful smile; later a startled face, "
                              "finally a scornful half-smile.") == ["neutral", "happiness", "surprise",
                                                                     "contempt"]
    assert R.caption_order_reward([GOOD], segment_order=[["neutral", "happiness"]]) == [1.0]
    # reversed order: LCS 1 of 2
    assert R.caption_order_reward([GOOD], segment_order=[["happiness", "neutral"]]) == [0.5]
    assert R.caption_order_reward([BAD], segment_order=[["neutral"]]) == [0.0]
    assert R.order_score(["a", "b", "c"], ["a", "c"]) == pytest.approx(2 / 3)


def test_missing_column_is_a_clear_error():
    with pytest.raises(R.RewardColumnError, match="label"):
        R.label_reward([GOOD])
    with pytest.raises(R.RewardColumnError, match="rows"):
        R.au_reward([GOOD, GOOD], aus=[["AU12"]])
    with pytest.raises(R.RewardColumnError, match="unknown reward"):
        R.get(["format", "nope"])
