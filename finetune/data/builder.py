"""(Analysis, labels) -> chat conversations -> HF `datasets` on disk.

A conversation is exactly what the agent sends a model at inference (the
agent's own `agent.graph.build_messages`: system prompt with the tool list,
the evidence rendering of agent/evidence.py, the user request),
optionally one tool call of the agent's toolbox answered by agent/toolbox.py,
and the Exp-CoT engine's explanation (agent/engine.py) as the assistant's
target. Tool results are user turns wrapped in <tool_response> through
agent.backends.text_messages, as the transformers backend sends them to a
template without tool support.

Rows carry the labels the rewards and the evaluation read: label, aus,
observed_aus, segment_order (see finetune/rewards.py), plus the identity and
clip that the held-out split keys on, and the analysis as JSON.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from agent import engine
from agent import evidence as ev
from agent.backends import text_messages
from agent.graph import build_messages
from agent.toolbox import Toolbox, ToolCall
from tools.analysis import Analysis
from tools.errors import FaceReasonError


class TrainingDataError(FaceReasonError):
    """Training data that cannot be used: a missing file, a bad record, an empty split."""

    code = "bad_training_data"


# ------------------------------------------------------------------ prompts
def initial_messages(analysis: Analysis, track_id: int, question: str | None = None) -> list[dict]:
    """System + user turns the agent opens with for one face (the agent's own builder)."""
    return build_messages(analysis, track_id, question)


def teacher_call(analysis: Analysis, track_id: int, rng: random.Random) -> ToolCall:
    """The look a careful analyst takes before answering, chosen from the evidence."""
    t = analysis.track(track_id)
    segs = [s for s in ev.segments(analysis, t) if not s.micro]
    if len(analysis.tracks) > 1 and rng.random() < 0.5:
        return ToolCall("inspect_face", {"track_id": track_id})
    if len(segs) >= 2 and rng.random() < 0.6:
        a, b = segs[0], max(segs[1:], key=lambda s: s.end - s.start)
        return ToolCall("compare_moments", {"t1": round(a.peak_time, 1), "t2": round(b.peak_time, 1)})
    spans = ev.au_spans(analysis, t)
    if spans and rng.random() < 0.5:
        return ToolCall("list_events", {"au": spans[0].au})
    s = max(segs, key=lambda s: s.end - s.start) if segs else None
    start, end = (s.start, s.end) if s else (t.start, t.end)
    return ToolCall("time_window", {"start": round(start, 1), "end": round(end, 1)})


def conversation(analysis: Analysis, track_id: int, seed: int = 0, tool_share: float = 0.3,
                 target: str | None = None) -> list[dict]:
    """Messages for one face, ending with the teacher's answer (the engine's unless `target`)."""
    rng = random.Random(f"conv:{seed}:{track_id}")
    msgs = initial_messages(analysis, track_id)
    if analysis.source.kind == "video" and rng.random() < tool_share:
        call = teacher_call(analysis, track_id, rng)
        result = Toolbox(analysis, default_track=track_id).run(call)
        body = f"<tool_call>\n{call.as_json()}\n</tool_call>"
        msgs += text_messages([{"role": "assistant", "content": body},
                               {"role": "tool", "content": result}])
    if target is None:
        target = engine.explain_track(analysis, analysis.track(track_id), seed).to_text()
    msgs.append({"role": "assistant", "content": target})
    return msgs


def observed_aus(analysis: Analysis, track_id: int) -> list[str]:
    return sorted({s.au for s in ev.au_spans(analysis, analysis.track(track_id))})


def record(analysis: Analysis, track_id: int, *, id: str, source: str, clip_id: str, identity: str,
           label: str, aus: Iterable[str] | None = None, segment_order: Iterable[str] | None = None,
           scenario: str = "", confuser: bool = False, seed: int = 0, tool_share: float = 0.3,
           images: list[str] | None = None) -> dict[str, Any]:
    """One dataset row: the labels, the SFT conversation and the GRPO prompt."""
    msgs = conversation(analysis, track_id, seed, tool_share)
    return {
        "id": id, "source": source, "clip_id": clip_id, "identity": identity,
        "scenario": scenario, "confuser": bool(confuser), "track_id": int(track_id),
        "label": label, "aus": sorted(set(aus or [])), "observed_aus": observed_aus(analysis, track_id),
        "segment_order": list(segment_order or [label]),
        "messages": msgs, "prompt": msgs[:-1], "images": list(images or []),
        "analysis": analysis.to_json(),
    }


def split_of(key: str, test_share: float, salt: str = "facereason") -> str:
    """'test' or 'train' by a stable hash of the identity/clip key (no leakage across splits)."""
    h = int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if h < test_share else "train"


# ------------------------------------------------------------------ synthetic
def _synthetic_rows(batch: dict[str, list], tool_share: float) -> dict[str, list]:
    from finetune.data import synthetic

    rows: list[dict] = []
    for seed in batch["seed"]:
        analysis, examples = synthetic.make_clip(int(seed))
        for e in examples:
            rows.append(record(analysis, e.track_id, id=e.id, source="synthetic", clip_id=e.clip_id,
                               identity=e.identity, label=e.label, aus=e.aus,
                               segment_order=e.segment_order, scenario=e.scenario,
                               confuser=e.confuser, seed=int(seed), tool_share=tool_share))
    return {k: [r[k] for r in rows] for k in ROW_KEYS}


ROW_KEYS = ["id", "source", "clip_id", "identity", "scenario", "confuser", "track_id", "label", "aus",
            "observed_aus", "segment_order", "messages", "prompt", "images", "analysis"]


def synthetic_dataset(n_clips: int, seed: int = 0, test_share: float = 0.15,
                      tool_share: float = 0.3, num_proc: int | None = None):
    """A DatasetDict(train, test) of synthetic faces, split by identity.

    Generation runs in `datasets.map`, so `num_proc` spreads it over processes.
    """
    from datasets import Dataset

    if n_clips < 1:
        raise TrainingDataError(f"n_clips must be at least 1; got {n_clips}.")
    seeds = Dataset.from_dict({"seed": [seed * 1_000_003 + i for i in range(n_clips)]})
    ds = seeds.map(_synthetic_rows, batched=True, batch_size=8, remove_columns=["seed"],
                   fn_kwargs={"tool_share": tool_share}, num_proc=num_proc,
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
