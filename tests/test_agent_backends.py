"""The transformers backend with the real SmolLM2-135M-Instruct: constrained decoding with
llguidance, batches of different schemas, and prompt-prefix reuse."""

from __future__ import annotations

import json

import pytest
from agent_synthetic import make_analysis

from agent import evidence as ev
from agent.backends import Request
from agent.decision import answer_schema, decision_schema, parse_answer, parse_decision, turn_schema
from agent.graph import answer_messages, decide_messages
from agent.transformers_backend import TransformersBackend

pytestmark = pytest.mark.slow

A = make_analysis(faces=2)


@pytest.fixture(scope="module")
def base():
    # The base model (no adapter): what it decides is not trained, only its form is enforced.
    return TransformersBackend.load(None, adapter="none")


def test_constrained_records_are_valid_for_each_face_in_one_batch(base):
    reqs, facts = [], []
    for t in A.tracks:
        f = ev.facts(A, t)
        facts.append(f)
        reqs.append(Request(decide_messages(A, t.track_id), decision_schema(f, A.emotion_labels),
                            max_new_tokens=160))
    gens = base.generate_batch(reqs)
    for g, f in zip(gens, facts, strict=True):
        d = parse_decision(g.text, f, A.emotion_labels)  # raises if the grammar let anything through
        assert set(d.cite) <= set(f.events) and g.constrained and g.n_tokens <= 160
    # Different schemas in the same batch: face 1's ids are not face 0's.
    assert set(facts[0].events) != set(facts[1].events)


def test_a_turn_may_be_a_tool_request_or_a_record(base):
    f = ev.facts(A, A.track(0))
    refs = [*f.segments, *f.events]
    g = base.generate(answer_messages(A, 0, "What happens at second 3?", None),
                      schema=turn_schema(answer_schema(refs, A.emotion_labels), tools_allowed=True),
                      max_new_tokens=160)
    obj = json.loads(g.text)
    if "tool" in obj:
        assert obj["tool"] in {"moment", "time_window", "compare_moments", "inspect_face",
                               "clip_context", "list_events"}
    else:
        parse_answer(obj, refs, A.emotion_labels)


def test_prefix_reuse_changes_nothing_but_the_time(base):
    msgs = decide_messages(A, 0)
    schema = decision_schema(ev.facts(A, A.track(0)), A.emotion_labels)
    base._prefixes.clear()
    cold = base.generate(msgs, schema=schema, max_new_tokens=160)
    warm = base.generate(msgs, schema=schema, max_new_tokens=160)
    assert cold.cached_tokens == 0 and warm.cached_tokens == warm.prompt_tokens - 1
    assert warm.text == cold.text
    # A different question about the same face reuses the system prompt and the evidence.
    other = base.generate(answer_messages(A, 0, "Why?", None), max_new_tokens=4)
    assert other.cached_tokens >= 16


def test_free_generation_streams(base):
    pieces: list[str] = []
    g = base.generate([{"role": "user", "content": "Say hello."}], max_new_tokens=6,
                      on_token=pieces.append)
    assert "".join(pieces).strip() == g.text.strip() and g.ttft is not None and not g.constrained


def test_a_record_streams_token_by_token(base):
    # A compact JSON record has no space before its note: the text must still arrive
    # as it is written, not in one piece near the end.
    f = ev.facts(A, A.track(0))
    pieces: list[str] = []
    base._prefixes.clear()  # a new prompt: its forced tokens are drafted
    g = base.generate(decide_messages(A, 0), schema=decision_schema(f, A.emotion_labels),
                      max_new_tokens=160, on_token=pieces.append)
    assert "".join(pieces) == g.text and g.constrained
    # one piece per decode step (a step writes the tokens the schema forces, then one the
    # model chose: ForcedDraft), the first before the record's first id is finished
    assert len(pieces) >= g.steps - 1 >= 8 and pieces[0].startswith('{"cite":[') and len(pieces[0]) <= 14


def test_forced_tokens_are_drafted_the_record_is_the_same(base):
    """Assisted decoding with the grammar's forced tokens as the draft (ForcedDraft): the
    greedy record is the one token-by-token decoding writes, in fewer forward passes."""
    f = ev.facts(A, A.track(1))
    msgs, schema = decide_messages(A, 1), decision_schema(f, A.emotion_labels)
    try:
        base.draft_forced = False
        base._prefixes.clear()
        plain = base.generate(msgs, schema=schema, max_new_tokens=160)
        base.draft_forced = True
        base._prefixes.clear()
        drafted = base.generate(msgs, schema=schema, max_new_tokens=160)
    finally:
        base.draft_forced = True
    assert drafted.text == plain.text and drafted.n_tokens == plain.n_tokens
    parse_decision(drafted.text, f, A.emotion_labels)
    assert plain.steps == plain.n_tokens  # the prefill writes the first token
    assert drafted.steps < 0.75 * plain.steps, (drafted.steps, plain.steps)
