"""Synthetic timelines and the conversation builder (finetune/data/)."""

from __future__ import annotations

import numpy as np
import pytest

from agent.schema import parse_explanation
from finetune.data import builder, synthetic
from finetune.rewards import format_reward


@pytest.mark.parametrize("kind,label,must", [
    ("crying", "sadness", {"AU01", "AU04", "AU15", "AU17"}),
    ("fear_vs_surprise", "fear", {"AU04", "AU20"}),
    ("surprise_vs_fear", "surprise", {"AU01", "AU02", "AU05", "AU26"}),
    ("polite_smile", "happiness", {"AU12"}),
    ("speech", "neutral", set()),
])
def test_labels_follow_the_scenario(kind, label, must):
    analysis, examples = synthetic.make_clip(11, scenario=kind)
    (ex,) = examples
    assert ex.scenario == kind and ex.label == label and ex.confuser
    assert must <= set(ex.aus)
    if kind == "speech":
        assert ex.aus == [] and ex.segment_order == ["neutral"]
    else:
        assert label in ex.segment_order
    t = analysis.track(ex.track_id)
    # Every per-frame series the agent reads is filled, and the timeline ran.
    for name in ("aus", "au_occurrence", "emotions", "valence", "arousal", "occlusion", "blendshapes"):
        assert getattr(t, name) is not None and len(getattr(t, name)) == t.n
    assert t.segments and t.summary is not None


def test_labels_match_the_spec_parameters():
    rng = np.random.default_rng(5)
    spec = synthetic.scenario_spec("sequence", rng, 1, "id0001", 0.0, 6.0)
    first, second = sorted(spec.phases, key=lambda p: p.onset)
    assert spec.segment_order == ["neutral", first.label, second.label]
    held = {p.label: p.release - p.apex for p in spec.phases}
    assert spec.label == max(held, key=held.get)
    expected = sorted({a for p in spec.phases for a, v in p.aus.items() if v >= synthetic.TRUE_AU_MIN})
    assert spec.true_aus == expected


def test_deterministic_and_measured_by_the_real_estimator():
    a1, e1 = synthetic.make_clip(21)
    a2, e2 = synthetic.make_clip(21)
    assert a1.to_json() == a2.to_json() and e1 == e2
    # Strong expressions are seen by the estimator: most true AUs are observed.
    hit = tot = 0
    for seed in range(12):
        a, exs = synthetic.make_clip(100 + seed, scenario="single")
        obs = set(builder.observed_aus(a, exs[0].track_id))
        hit += len(set(exs[0].aus) & obs)
        tot += len(exs[0].aus)
    assert tot and hit / tot >= 0.6, (hit, tot)


def test_conversations_and_split():
    dsd = builder.synthetic_dataset(12, seed=3, test_share=0.3, tool_share=0.5)
    train, test = dsd["train"], dsd["test"]
    assert len(train) + len(test) >= 12
    assert not set(train["identity"]) & set(test["identity"])
    rows = list(train) + list(test)
    assert any(len(r["messages"]) == 5 for r in rows)  # some rows carry a tool call + response
    for r in rows:
        msgs = r["messages"]
        assert [m["role"] for m in msgs[:2]] == ["system", "user"] and msgs[-1]["role"] == "assistant"
        assert r["prompt"] == msgs[:-1]
        target = msgs[-1]["content"]
        e = parse_explanation(target)
        assert e.conclusion.label in synthetic.EMOTIONS
        assert format_reward([target]) == [1.0]
        # The teacher cites only what was measured.
        assert {o.au for o in e.key_observations} <= set(r["observed_aus"])
        if len(msgs) == 5:
            assert msgs[2]["content"].startswith("<tool_call>") and "<tool_response>" in msgs[3]["content"]
