"""Caption judges: the swappable part of AutoDQ and TEM.

A judge does three things, each on plain strings:

- `extract_events(caption)`: at most 10 atomic events, in time order;
- `classify(events, caption)`: for each event, entailment / neutral /
  contradiction against a caption (one call for the whole list, as Tarsier's
  DREAM-1K evaluation does);
- `align(events_a, events_b)`: for each event of A, the index of the event of B
  that entails it, or None (TEM needs event-to-event matches).

`LLMJudge` (evals/llm_judge.py) asks any OpenAI-compatible chat server (vLLM, a hosted API) with the
prompts in prompts/judge_*.txt, JSON-constrained, with retries and an on-disk
cache. `OfflineJudge` (evals/offline_judge.py) runs here with no server: clause splitting on temporal
markers and conjunctions (each clause keeps its part of the video), a
facial-expression lexicon (evals/facial.py: AUs, emotions, valence, negation)
for contradictions and paraphrases, and MiniLM sentence embeddings for what the
lexicon does not cover; word lists in prompts/judge_offline_rules.yaml,
prompts/facial_actions.yaml and prompts/emotion_lexicon.yaml.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

from tools.errors import FaceReasonError

Label = Literal["entailment", "neutral", "contradiction"]
LABELS: tuple[str, ...] = ("entailment", "neutral", "contradiction")
MAX_EVENTS = 10  # DREAM-1K's AutoDQ asks for at most 10 events per caption


class JudgeError(FaceReasonError):
    """The judge could not give a valid answer (server down, bad replies, bad settings)."""

    code = "judge_failed"
    http_status = 502


@dataclass
class Relation:
    """How a caption relates to one event, with the evidence for it."""

    event: str
    label: Label
    evidence: str | None = None  # the clause of the caption that decided it (offline judge)
    score: float | None = None  # cosine similarity to that clause (offline judge)
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    """What AutoDQ and TEM need from a judge."""

    name: str

    def extract_events(self, caption: str) -> list[str]: ...

    def classify(self, events: list[str], caption: str) -> list[Relation]: ...

    def align(self, events_a: list[str], events_b: list[str]) -> list[int | None]: ...


def make_judge(
    kind: str,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    cache_path: str | Path | None = None,
    **kwargs,
) -> Judge:
    """Build a judge by name: "offline" or "llm" (which needs base_url and model)."""
    if kind == "offline":
        from evals.offline_judge import OfflineJudge

        return OfflineJudge(**kwargs)
    if kind == "llm":
        if not base_url or not model:
            raise JudgeError("The llm judge needs --base-url (e.g. http://127.0.0.1:8000/v1) and --model.")
        from evals.llm_judge import LLMJudge

        return LLMJudge(base_url, model, api_key=api_key, cache_path=cache_path, **kwargs)
    raise JudgeError(f"Unknown judge '{kind}': use offline or llm.")
