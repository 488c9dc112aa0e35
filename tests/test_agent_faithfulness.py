"""The faithfulness checker on crafted explanations, and the parser on crafted model text."""

from __future__ import annotations

import pytest
from agent_synthetic import make_analysis

from agent.faithfulness import check
from agent.schema import Conclusion, Explanation, KeyObservation, ParseError, parse_explanation

A = make_analysis(faces=2)


def _exp(obs=(), interpretation="", caption="", label="happiness", track_id=0) -> Explanation:
    return Explanation(track_id=track_id, key_observations=list(obs), interpretation=interpretation,
                       caption=caption, conclusion=Conclusion(label=label, confidence=0.8))


def test_faithful_explanation_passes():
    e = _exp([KeyObservation(au="AU12", intensity=3.0, start=2.0, end=5.0),
              KeyObservation(au="AU06", intensity=2.0, start=2.5, end=5.0)],
             interpretation="AU06 with AU12 is a Duchenne smile; there is no AU04, so anger is out.",
             caption="At the beginning the face is neutral. As the video progresses a smile appears "
                     "at 3 s. Towards the end the happiness holds.")
    assert check(e, A) == []


@pytest.mark.parametrize("obs,needle", [
    (KeyObservation(au="AU04", intensity=2.0, start=2.0, end=3.0), "AU04 was not observed"),
    (KeyObservation(au="AU12", intensity=3.0, start=0.0, end=1.2), "AU12 was not observed above threshold at 0.0-1.2"),
    (KeyObservation(au="AU12", intensity=4.9, start=2.0, end=5.0), "overstates the measured peak 3.2"),
    (KeyObservation(au="AU99", intensity=1.0, start=2.0, end=3.0), "not an Action Unit"),
])
def test_bad_observations(obs, needle):
    claims = check(_exp([obs]), A)
    assert len(claims) == 1 and needle in claims[0], claims


def test_face_1_aus_are_not_face_0s():
    # AU26 is real in this video, but on the other face.
    claims = check(_exp([KeyObservation(au="AU26", intensity=2.0, start=2.2, end=3.8)]), A)
    assert claims and "AU26" in claims[0]
    assert check(_exp([KeyObservation(au="AU26", intensity=2.0, start=2.2, end=3.8)],
                      label="surprise", track_id=1), A) == []


def test_text_claims():
    e = _exp(interpretation="AU09 shows disgust. Mostly AU12.",
             caption="At the beginning the face shows fear. At 9 s the smile fades.")
    claims = check(e, A)
    assert any("interpretation: cites AU09" in c for c in claims)
    assert any("'fear'" in c for c in claims)
    assert any("cites 9 s" in c for c in claims)
    assert not any("AU12" in c for c in claims)


def test_negated_mentions_are_not_claims():
    e = _exp(interpretation="There is no AU04 and no AU15, which rules out anger and sadness.",
             caption="At the beginning the face is neutral, without AU09.")
    assert check(e, A) == []


def test_label_outside_set_and_missing_face():
    assert any("not in the label set" in c for c in check(_exp(label="joy"), A))
    assert check(_exp(track_id=7), A) == ["face 7 does not exist in the analysis"]


LOOSE = """Key Observations
* AU 6 (cheek raiser) intensity 2.0 from 2.2 to 5.2 s - suggests enjoyment
* AU12: intensity=3.1, at 3 s, a smile

Interpretation: a felt smile.

## Conclusion:
Happiness, confidence 85%, valence 0.6 and arousal 0.2.

At the beginning he is calm. As the video progresses he smiles. Towards the end he keeps smiling."""


def test_parser_reads_loose_model_text():
    e = parse_explanation(LOOSE)
    assert [(o.au, o.intensity, o.start, o.end) for o in e.key_observations] == [
        ("AU06", 2.0, 2.2, 5.2), ("AU12", 3.1, 3.0, 3.0)]
    assert e.key_observations[0].name == "cheek raiser"
    assert e.conclusion.label == "happiness"
    assert e.conclusion.confidence == pytest.approx(0.85)
    assert e.conclusion.valence == pytest.approx(0.6) and e.conclusion.arousal == pytest.approx(0.2)
    assert e.caption.startswith("At the beginning") and "Towards the end" in e.caption
    assert e.interpretation == "a felt smile."


@pytest.mark.parametrize("text,needle", [
    ("The face is happy.", "missing section"),
    ("**Key Observations:**\n- AU12\n**Conclusion:**\nIt is hard to say.", "names none of the labels"),
])
def test_parser_rejects(text, needle):
    with pytest.raises(ParseError, match=needle):
        parse_explanation(text)


def test_parser_uses_the_given_label_set():
    e = parse_explanation("**Key Observations:**\n- none\n**Conclusion:**\nmostly Joy (confidence 0.7)",
                          labels=["calm", "joy"])
    assert e.conclusion.label == "joy" and e.key_observations == []
