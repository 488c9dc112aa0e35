"""Multi-turn chat about one analysed video, through the same agent loop as `explain`.

Each question is answered from the face's evidence and the explanation's decision
(a follow-up such as "and at 12 s?" names what it asks about); the session keeps
the conversation for the page and the API.

`ChatSession.start(source_or_result)` keeps the analysis, the explanation and the
conversation; `chat(session, question)` runs one answer task (agent/graph.py):
the model may look closer with a tool (a moment, a window, the events of an
AU, two moments compared), then writes a short record, its sentence plus the
ids of the evidence it rests on, which agent/render.py turns into an answer
that names the time and what the face does there. A reply the model cannot
give is answered by rules from the same evidence (`fallback_used`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import prompts
from agent import models
from agent.answers import answer_of, times_in
from agent.backends import Backend, TokenFn, make_backend
from agent.decision import Decision
from agent.graph import MAX_NEW_TOKENS, answer_task, perceive, result_from_analysis, run_tasks
from agent.schema import ExplainResult
from tools.analysis import Analysis
from tools.errors import FaceReasonError

_FACE_RE = re.compile(r"\bface\s+(\d+)", re.I)

__all__ = ["ChatAnswer", "ChatSession", "chat", "times_in"]


class ChatAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    cited_times: list[float] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    frame_time: float | None = None
    track_id: int | None = None
    record: dict[str, Any] | None = Field(None, description="the answer record the text was rendered from (ids, label, note): the model's, or the rules' where answered_by is engine")
    answered_by: str = Field("model", description="model, or engine (the rules answered)")
    fallback_used: bool = False
    fallback_reason: str | None = None
    withheld: list[str] = Field(default_factory=list)


@dataclass
class ChatSession:
    result: ExplainResult
    backend: Backend | None = None
    history: list[dict] = field(default_factory=list)
    source_path: Path | None = None
    seed: int = 0
    backend_spec: dict = field(default_factory=dict)

    @property
    def analysis(self) -> Analysis:
        return self.result.analysis

    @classmethod
    def start(cls, source: str | os.PathLike | Analysis | ExplainResult, *, model: str | None = None,
              adapter: str | None = None, backend: str | Backend = "auto",
              base_url: str | None = None, api_key: str | None = None, fps: float | None = None,
              max_faces: int = 4, seed: int = 0) -> ChatSession:
        """A session over an explained result, an Analysis or a media path.

        A path is analysed; the opening explanation then comes from the engine (no
        model call), so starting a chat is cheap. The backend loads on first use.
        """
        source_path = None
        if backend == "auto" and model is None and adapter is None:
            # "auto" follows the reasoner that explained the result, as far as the chat's own
            # ship rule allows: the fine-tuned model answers follow-ups only where its
            # evaluation shows it at or above the rules on them (models.chat_ships_as_default).
            explained = source.backend if isinstance(source, ExplainResult) else None
            if explained == "engine" or not models.chat_ships_as_default():
                backend = "engine"
            elif explained == "transformers":
                backend = "transformers"
        if isinstance(source, ExplainResult):
            result = source
        elif isinstance(source, Analysis):
            result = result_from_analysis(source, seed)
        else:
            source_path = Path(source)
            if not source_path.exists():
                raise FaceReasonError(f"no such file: {source}")
            result = result_from_analysis(perceive(source_path, fps, max_faces), seed)
        spec = {"backend": backend, "model": model, "adapter": adapter, "base_url": base_url,
                "api_key": api_key}
        be = backend if isinstance(backend, Backend) else None
        return cls(result=result, backend=be, source_path=source_path, seed=seed, backend_spec=spec)

    def get_backend(self) -> Backend:
        if self.backend is None:
            s = self.backend_spec
            self.backend = make_backend(s.get("backend", "auto"), model=s.get("model"),
                                        adapter=s.get("adapter"), base_url=s.get("base_url"),
                                        api_key=s.get("api_key"))
        return self.backend

    def decision(self, track_id: int) -> Decision | None:
        exp = next((e for e in self.result.explanations if e.track_id == track_id), None)
        return Decision.model_validate(exp.decision) if exp is not None and exp.decision else None


def _pick_track(session: ChatSession, question: str) -> int | None:
    ids = [t.track_id for t in session.analysis.tracks]
    if not ids:
        return None
    m = _FACE_RE.search(question)
    if m and int(m.group(1)) in ids:
        return int(m.group(1))
    return ids[0]


def chat(session: ChatSession, question: str, *, on_token: TokenFn | None = None,
         max_new_tokens: int = MAX_NEW_TOKENS) -> ChatAnswer:
    """Answer one follow-up question about the session's video."""
    if not question or not question.strip():
        raise FaceReasonError("the question is empty")
    a = session.analysis
    track_id = _pick_track(session, question)
    if track_id is None:
        text = prompts.load_yaml("render")["no_face"]
        session.history.append({"track_id": None, "question": question, "answer": text})
        return ChatAnswer(text=text)
    task = answer_task(a, track_id, question, session.decision(track_id),
                       source_path=session.source_path, on_token=on_token,
                       max_new_tokens=max_new_tokens)
    run_tasks([task], session.get_backend(), seed=session.seed)
    got = answer_of(task, question, session.seed)
    track = a.track(track_id)
    cited = [round(t, 2) for t in got.times] or times_in(question)
    frame = min(max(cited[0], track.start), track.end) if cited else None
    session.history.append({"track_id": track_id, "question": question, "answer": got.text})
    return ChatAnswer(text=got.text, cited_times=cited, tool_calls=task.tool_log, frame_time=frame,
                      track_id=track_id, record=got.record.model_dump(),
                      answered_by="engine" if got.fallback else task.decided_by,
                      fallback_used=got.fallback, fallback_reason=task.problem if got.fallback else None,
                      withheld=got.withheld)
