"""The faithfulness check on crafted text: the claims it must catch and the ones it must not."""

from __future__ import annotations

import pytest
from agent_synthetic import make_analysis

from agent.faithfulness import check, check_words, emotion_mentions
from agent.schema import Conclusion, Explanation, KeyObservation, ParseError, parse_explanation

A = make_analysis(faces=2)
T0, T1 = A.track(0), A.track(1)


def _exp(obs=(), interpretation="", caption="", label="happiness", track_id=0) -> Explanation:
    return Explanation(track_id=track_id, key_observations=list(obs), interpretation=interpretation,
                       caption=caption, conclusion=Conclusion(label=label, confidence=0.8))


def test_faithful_explanation_passes():
    e = _exp([KeyObservation(au="AU12", name="lip corner puller", intensity=3.0, start=2.0, end=5.0,
                             suggests="a smile and positive affect"),
              KeyObservation(au="AU06", name="cheek raiser", intensity=2.0, start=2.5, end=5.0)],
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


@pytest.mark.parametrize("text,needle", [
    ("AU12 suggests a pouting, unhappy mouth.", "opposite meaning"),          # the demo's error
    ("AU12 (lip tightener) pulls the mouth.", "calls AU12 'lip tightener'"),  # a wrong FACS name
    ("AU06 marks a Duchenne smile when paired with AU01.", "Duchenne smile is AU06 with AU12"),
    ("AU12 intensity 5.0 shows a broad smile.", "measured peak is 3.2"),
    ("The face looks afraid.", "names fear"),                                 # not among the segments
    ("AU09 wrinkles the nose.", "cites AU09"),                                # never observed
    ("The smile is gone at 9 s.", "cites 9 s"),                               # outside the face's span
    ("Her brows knit together in concentration.", "says 'brows knit' (AU04)"),  # a movement in words
    ("The nose wrinkles slightly.", "(AU09), which was not observed"),
    ("The lip corners tighten into dimples.", "(AU14)"),
])
def test_claims_in_a_models_own_words_are_caught(text, needle):
    claims = check_words(text, A, T0)
    assert any(needle in c for c in claims), claims


@pytest.mark.parametrize("text", [
    "AU06 with AU12 is a felt, Duchenne smile.",
    "There is no AU04 and no AU15, so this is not anger or sadness.",
    "AU04 does not appear at all.",
    "She is smiling, not crying.",
    "Surprise was considered and ruled out.",
    "The person is no longer calm at the end but still happy.",
    "AU12 (lip corner puller) shows positive affect.",
    # the renderer's listing of cues: the 4 of AU45 is no intensity of AU06 (peak 2.1)
    "AU06 (cheek raiser), AU45 (blink) and AU12 point to happiness.",
    "The lip corners draw upward and the cheeks rise.",   # AU12 and AU06, both measured
    "Her brows do not knit.",                             # negated
])
def test_true_and_negated_statements_pass(text):
    assert check_words(text, A, T0) == []


def test_the_decided_label_and_a_scope_change_what_may_be_named():
    assert check_words("A contemptuous smirk.", A, T0)  # contempt is not among the segments ...
    assert check_words("A contemptuous smirk.", A, T0, allowed_labels={"contempt"}) == []  # ... unless decided
    # Face 0 is neutral until 1.9 s: happiness is not there in that window.
    assert check_words("The person is smiling.", A, T0, scope=(0.0, 1.5))
    assert check_words("The person is smiling.", A, T0, scope=(2.5, 4.0)) == []
    # a movement described in words is held to the span as a code is
    assert check_words("The lip corners draw upward.", A, T0, scope=(0.0, 1.2))
    assert check_words("The lip corners draw upward.", A, T0, scope=(2.5, 4.0)) == []


def test_an_au_in_the_emotions_own_emfacs_pattern_is_not_a_reversal():
    """AU12 is positive on its own, but EMFACS codes contempt as R12A+R14A: "AU12 points to
    contempt" pairs them as the table does, "AU12 points to sadness" reverses AU12."""
    ok = check_words("AU12 (lip corner puller) points to contempt.", A, T0, allowed_labels={"contempt"})
    assert not any("opposite meaning" in c for c in ok), ok
    bad = check_words("AU12 (lip corner puller) points to sadness.", A, T0, allowed_labels={"sadness"})
    assert any("opposite meaning" in c for c in bad), bad


def test_emotion_mentions_read_phrases_and_negation():
    got = [(lab, neg) for _, lab, neg in emotion_mentions("Crying gives way to laughter, not fear.")]
    assert got == [("sadness", False), ("happiness", False), ("fear", True)]
    # The longer phrase wins over the word inside it.
    assert [lab for _, lab, _ in emotion_mentions("a scornful half-smile")] == ["contempt"]


def test_parser_reads_loose_model_text():
    text = ("Key Observations\n- AU 12, intensity 3.1, 2.0 to 5.5 s: smile\n"
            "Conclusion: The expression is happiness, confidence 85%\n"
            "At the beginning the face rests. Towards the end it smiles.")
    e = parse_explanation(text)
    assert e.key_observations[0].au == "AU12" and e.key_observations[0].start == 2.0
    assert e.conclusion.label == "happiness" and e.conclusion.confidence == pytest.approx(0.85)
    assert e.caption.startswith("At the beginning")
    with pytest.raises(ParseError, match="Conclusion"):
        parse_explanation("**Key Observations:**\n- AU12")


def test_a_note_must_be_a_sentence_not_an_id():
    from agent.faithfulness import check_note

    assert check_note("happiness1", A, T0)  # an evidence id, and not a sentence
    assert check_note("The smile is AU12a.", A, T0)  # an id inside prose names nothing
    assert check_note("Happiness.", A, T0)
    assert not any("evidence id" in c for c in check_words("AU12 and AU06 rise.", A, T0))  # codes


@pytest.mark.parametrize("text,flagged", [
    # the engine's caption (session 11): "eyes" and "opens" are in two clauses
    ("The cheeks lift, creasing the corners of the eyes and the mouth opens slightly.", False),
    ("The mouth opens slightly and the eyes crinkle.", False),
    ("Her eyes open wide.", True),
    ("She opens her eyes.", True),
])
def test_a_phrase_gap_does_not_cross_into_the_next_clause(text, flagged):
    # face 0 has no AU05 (upper lid raiser): only a phrase about its own eyes may claim it
    claims = check_words(text, A, T0)
    assert any("(AU05)" in c for c in claims) == flagged, claims
