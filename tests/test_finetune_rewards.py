"""GRPO rewards on crafted decision records of a synthetic face."""

from __future__ import annotations

import pytest
from agent_synthetic import make_analysis

from agent import evidence as ev
from agent.decision import Decision
from finetune import rewards as R

A = make_analysis(faces=1)
AJ = A.to_json()
F0 = ev.facts(A, A.track(0))
SMILE = [i for i, e in F0.events.items() if e.au in ("AU06", "AU12")]
GOOD = Decision(label="happiness", conf=0.8, cite=SMILE, arc=["neutral1", "happiness1"]).to_json()
BAD_IDS = GOOD.replace(SMILE[0], "AU99z")
COLS = {"analysis": [AJ], "track_id": [0]}


def cols(n: int) -> dict:
    return {"analysis": [AJ] * n, "track_id": [0] * n}


def conv(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_format():
    assert R.format_reward([GOOD, BAD_IDS, "The face is happy.", conv(GOOD)], **cols(4)) == \
        [1.0, 0.25, 0.0, 1.0]


def test_label():
    assert R.label_reward([GOOD, GOOD, BAD_IDS], label=["happiness", "sadness", "happiness"],
                          **cols(3)) == [1.0, 0.0, 0.0]
    assert R.label_reward([GOOD], label=["Happiness"], **COLS) == [1.0]


def test_au():
    assert R.au_reward([GOOD], aus=[["AU06", "AU12"]], **COLS) == [1.0]
    # one of two cited is true, three true: F1 = 2*1/(2+3) = 0.4 -> 2*0.4-1 = -0.2
    assert R.au_reward([GOOD], aus=[["AU12", "AU25", "AU26"]], **COLS)[0] == pytest.approx(-0.2)
    assert R.au_reward([GOOD], aus=[["AU04"]], **COLS) == [-1.0]
    none = Decision(label="neutral", conf=0.8, cite=[], arc=["neutral1"]).to_json()
    # neutral truth: citing nothing is right
    assert R.au_reward([none, GOOD], aus=[[], []], **cols(2)) == [1.0, -1.0]
    assert R.au_reward([GOOD], aus=[["AU 6", "AU12"]], **COLS) == [1.0]


def test_faithfulness_judges_the_models_own_words():
    noted = lambda note: Decision(label="happiness", conf=0.8, cite=SMILE, arc=["neutral1", "happiness1"],  # noqa: E731
                                  note=note).to_json()
    assert R.faithfulness_reward([GOOD, noted("A felt smile.")], **cols(2)) == [0.0, 0.0]
    assert R.faithfulness_reward([noted("AU12 suggests an unhappy mouth."), noted("She looks afraid.")],
                                 **cols(2)) == [-1.0, -1.0]


def test_caption_order_is_scored_on_the_rendered_caption():
    assert R.caption_order_reward([GOOD], segment_order=[["neutral", "happiness"]], **COLS) == [1.0]
    # A record that misses the smile loses half the order; one that leaves out the opening
    # rest does not, because the caption tells the measured rest anyway (render.framed_arc).
    only_rest = Decision(label="neutral", conf=0.8, cite=[], arc=["neutral1"]).to_json()
    assert R.caption_order_reward([only_rest], segment_order=[["neutral", "happiness"]], **COLS) == [0.5]
    only_smile = Decision(label="happiness", conf=0.8, cite=SMILE, arc=["happiness1"]).to_json()
    assert R.caption_order_reward([only_smile], segment_order=[["neutral", "happiness"]], **COLS) == [1.0]
    assert R.caption_order_reward([BAD_IDS], segment_order=[["neutral"]], **COLS) == [0.0]


def test_caption_emotions_reads_negation():
    assert R.caption_emotions("At first she cries, then she is no longer sad but smiling.") == \
        ["sadness", "happiness"]


def test_missing_column_is_an_error():
    with pytest.raises(R.RewardColumnError, match="label"):
        R.label_reward([GOOD], **COLS)
    with pytest.raises(R.RewardColumnError, match="2 completions"):
        R.au_reward([GOOD, GOOD], aus=[["AU12"]], **cols(2))
    with pytest.raises(R.RewardColumnError, match="analysis"):
        R.format_reward([GOOD])
    with pytest.raises(R.RewardColumnError, match="unknown reward"):
        R.get(["format", "style"])
