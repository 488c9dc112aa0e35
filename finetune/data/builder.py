"""(Analysis, labels) -> chat conversations -> HF `datasets` on disk.

A conversation is exactly what the agent sends a model at inference: the
agent's own opening turns (`agent.graph.decide_messages` for an explanation,
`agent.graph.answer_messages` for a follow-up question), optionally one tool
request answered by the agent's Toolbox and sent back as the loop sends it,
and the target record (finetune/data/targets.py, built from the clip's truth)
as the assistant's last turn, in the compact JSON the constrained decoder
produces. So training and serving match by construction.

Rows carry the labels the rewards and the evaluation read: kind (decide or
answer), label, aus, observed_aus, segment_order (see finetune/rewards.py),
plus the identity and clip that the held-out split keys on, and the analysis
as JSON.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent import evidence as ev
from agent.backends import text_messages
from agent.decision import Decision, ToolRequest
from agent.graph import answer_messages, decide_messages
from agent.toolbox import Toolbox
from finetune.data import targets
from tools.analysis import Analysis
from tools.errors import FaceReasonError


class TrainingDataError(FaceReasonError):
    """Training data that cannot be used: a missing file, a bad record, an empty split."""

    code = "bad_training_data"


# ------------------------------------------------------------------ conversations
def with_tool(analysis: Analysis, track_id: int, messages: list[dict], req: ToolRequest) -> list[dict]:
    """The conversation after one tool round, as the agent loop writes it."""
    result = Toolbox(analysis, track_id).run(req)
    return messages + text_messages([
        {"role": "assistant", "content": req.to_json()},
        {"role": "tool", "content": json.dumps(result, separators=(",", ":"))}])


def decide_tool(analysis: Analysis, track_id: int, decision: Decision, rng: random.Random) -> ToolRequest:
    """The look a careful analyst takes before deciding: the key AU's events, or the apex."""
    f = ev.facts(analysis, analysis.track(track_id))
    if decision.cite and rng.random() < 0.5:
        return ToolRequest(tool="list_events", args={"au": f.events[decision.cite[0]].au})
    seg = f.segments.get(decision.arc[-1]) if decision.arc else None
    t = seg.peak_time if seg is not None else analysis.track(track_id).start
    return ToolRequest(tool="moment", args={"t": round(t, 1)})


def decide_conversation(analysis: Analysis, track_id: int, decision: Decision, *, seed: int = 0,
                        tool_share: float = 0.15) -> list[dict]:
    rng = random.Random(f"conv:{seed}:{track_id}")
    msgs = decide_messages(analysis, track_id)
    if analysis.source.kind == "video" and rng.random() < tool_share:
        msgs = with_tool(analysis, track_id, msgs, decide_tool(analysis, track_id, decision, rng))
    return [*msgs, {"role": "assistant", "content": decision.to_json()}]


def answer_conversation(analysis: Analysis, track_id: int, decision: Decision, qa: targets.QA) -> list[dict]:
    msgs = answer_messages(analysis, track_id, qa.question, decision)
    if qa.tool is not None:
        msgs = with_tool(analysis, track_id, msgs, qa.tool)
    return [*msgs, {"role": "assistant", "content": qa.answer.to_json()}]


def observed_aus(analysis: Analysis, track_id: int) -> list[str]:
    return sorted({s.au for s in ev.au_spans(analysis, analysis.track(track_id))})


ROW_KEYS = ["id", "kind", "source", "clip_id", "identity", "scenario", "confuser", "track_id", "label",
            "aus", "observed_aus", "segment_order", "messages", "prompt", "images", "analysis"]


def records(analysis: Analysis, track_id: int, *, id: str, source: str, clip_id: str, identity: str,
            label: str, aus: Iterable[str] | None = None, segment_order: Iterable[str] | None = None,
            scenario: str = "", confuser: bool = False, seed: int = 0, tool_share: float = 0.15,
            questions: int = 1, images: list[str] | None = None,
            question: str | None = None) -> list[dict[str, Any]]:
    """The dataset rows of one face: its decision, then `questions` follow-ups.

    `question` is a data set's own question about the face (FEA-20K's "Why is she happy?"):
    it becomes one more follow-up, answered with the decided label and its strongest evidence.
    """
    order = list(segment_order or [label])
    true_aus = sorted(set(aus or []))
    decision = targets.truth_decision(analysis, track_id, label=label, aus=true_aus,
                                      segment_order=order, scenario=scenario, seed=seed)
    base = {"source": source, "clip_id": clip_id, "identity": identity, "scenario": scenario,
            "confuser": bool(confuser), "track_id": int(track_id), "label": label, "aus": true_aus,
            "observed_aus": observed_aus(analysis, track_id), "segment_order": order,
            "images": list(images or []), "analysis": analysis.to_json()}
    msgs = decide_conversation(analysis, track_id, decision, seed=seed, tool_share=tool_share)
    rows = [{**base, "id": id, "kind": "decide", "messages": msgs, "prompt": msgs[:-1]}]
    rng = random.Random(f"qa:{seed}:{track_id}")
    qas = targets.questions(analysis, track_id, decision, rng, n=questions)
    if question and question.strip():
        qas.insert(0, targets.why_answer(question.strip(), decision))
    for k, qa in enumerate(qas):
        msgs = answer_conversation(analysis, track_id, decision, qa)
        rows.append({**base, "id": f"{id}_q{k + 1}", "kind": "answer", "messages": msgs,
                     "prompt": msgs[:-1]})
    return rows


def split_of(key: str, test_share: float, salt: str = "facereason") -> str:
    """'test' or 'train' by a stable hash of the identity/clip key (no leakage across splits)."""
    h = int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_share else "train"


# ------------------------------------------------------------------ synthetic
def _synthetic_rows(batch: dict[str, list], tool_share: float, question_share: float,
                    long_share: float) -> dict[str, list]:
    from finetune.data import synthetic

    rows: list[dict] = []
    for seed in batch["seed"]:
        analysis, examples = synthetic.make_clip(int(seed), long_share=long_share)
        rng = random.Random(f"q:{seed}")
        for e in examples:
            rows += records(analysis, e.track_id, id=e.id, source="synthetic", clip_id=e.clip_id,
                            identity=e.identity, label=e.label, aus=e.aus,
                            segment_order=e.segment_order, scenario=e.scenario,
                            confuser=e.confuser, seed=int(seed), tool_share=tool_share,
                            questions=int(rng.random() < question_share))
    return {k: [r[k] for r in rows] for k in ROW_KEYS}


def synthetic_dataset(n_clips: int, seed: int = 0, test_share: float = 0.15,
                      tool_share: float = 0.15, question_share: float = 0.6,
                      long_share: float = 0.0, num_proc: int | None = None):
    """A DatasetDict(train, test) of synthetic faces, split by identity.

    Generation runs in `datasets.map`, so `num_proc` spreads it over processes.
    """
    from datasets import Dataset

    if n_clips < 1:
        raise TrainingDataError(f"n_clips must be at least 1; got {n_clips}.")
    seeds = Dataset.from_dict({"seed": [seed * 1_000_003 + i for i in range(n_clips)]})
    ds = seeds.map(_synthetic_rows, batched=True, batch_size=8, remove_columns=["seed"],
                   fn_kwargs={"tool_share": tool_share, "question_share": question_share,
                              "long_share": long_share},
                   num_proc=num_proc,
                   desc="synthetic clips")
    return split(ds, test_share, key="identity")


def split(ds, test_share: float, key: str = "identity"):
    """DatasetDict(train, test) by a stable hash of column `key`."""
    from datasets import DatasetDict

    sides = [split_of(str(k), test_share) for k in ds[key]]
    train = ds.select([i for i, s in enumerate(sides) if s == "train"])
    test = ds.select([i for i, s in enumerate(sides) if s == "test"])
    if len(train) == 0:
        raise TrainingDataError(f"no training rows after the split by {key} ({len(ds)} rows)")
    return DatasetDict(train=train, test=test)


def save(dsd, out_dir: str | Path) -> Path:
    from datasets import DatasetDict

    out = Path(out_dir)
    # datasets cannot read back a saved split with no rows: leave empty splits out
    # (`load` gives them back empty).
    DatasetDict({k: v for k, v in dsd.items() if len(v)}).save_to_disk(str(out))
    return out


def load(path: str | Path):
    """A dataset saved by `save` (DatasetDict with train/test)."""
    from datasets import load_from_disk

    p = Path(path)
    if not p.exists():
        raise TrainingDataError(f"no dataset at {p}; build one with `facereason train data`.")
    dsd = load_from_disk(str(p))
    if "train" not in dsd:
        raise TrainingDataError(f"{p} has no train split")
    if "test" not in dsd:
        dsd["test"] = dsd["train"].select(range(0))
    return dsd


# ------------------------------------------------------------------ VLM rows
def multimodal_messages(messages: list[dict], n_images: int) -> list[dict]:
    """Messages in the content-parts form VLM processors take: images first in the first
    user turn (as agent.backends sends key frames), text parts everywhere."""
    out, placed = [], False
    for m in messages:
        parts = [{"type": "text", "text": m["content"]}]
        if m["role"] == "user" and not placed:
            parts = [*({"type": "image"} for _ in range(n_images)), *parts]
            placed = True
        out.append({"role": m["role"], "content": parts})
    return out


def with_key_frames(row: dict, frames: list) -> dict:
    """A row for VLM training: its conversation with `frames` (PIL images or arrays) attached."""
    from PIL import Image

    pil = [f if isinstance(f, Image.Image) else Image.fromarray(f) for f in frames]
    return {**row, "messages": multimodal_messages(row["messages"], len(pil)), "images": pil}
