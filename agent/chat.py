"""Multi-turn chat about one analysed video, grounded in the same Analysis.

`ChatSession.start(source_or_result)` keeps the analysis, the explanation and the
conversation; `chat(session, question)` answers through the tools. When the
question names a moment ("second 7", "at 3 s") the agent looks at that window
with `time_window` before the model speaks, so even a small model has the
numbers in front of it; the model may call more tools. An answer that is
empty, off-topic or cites an AU that was not observed is replaced by a
grounded answer written from the tool results (`fallback_used`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

import prompts
from agent import faithfulness
from agent.backends import Backend, BackendError, TokenFn, make_backend
from agent.graph import result_from_analysis, tools_block
from agent.schema import HEAD_OBS, ExplainResult
from agent.toolbox import (
    TOOL_CALL_CLOSE,
    TOOL_CALL_OPEN,
    Toolbox,
    ToolCall,
    parse_tool_calls,
    schemas,
)
from tools.analysis import Analysis
from tools.errors import FaceReasonError

MAX_TOOL_ROUNDS = 2
MAX_NEW_TOKENS = 96
WINDOW_HALF_S = 0.5
_TIME_RE = re.compile(
    r"(?:\bsecond\s+|\bsec\.?\s+|\bat\s+)(\d+(?:\.\d+)?)|(\d+(?:\.\d+)?)\s*(?:s\b|secs?\b|seconds?\b)", re.I)
_FACE_RE = re.compile(r"\bface\s+(\d+)", re.I)


class ChatAnswer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str
    cited_times: list[float] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    frame_time: float | None = None
    track_id: int | None = None
    fallback_used: bool = False
    unfaithful_claims: list[str] = Field(default_factory=list)


def times_in(text: str) -> list[float]:
    """Times in seconds mentioned in a question or answer ("second 7", "at 3 s", "2.5 seconds")."""
    out = []
    for m in _TIME_RE.finditer(text):
        v = float(m.group(1) or m.group(2))
        if v not in out:
            out.append(v)
    return out


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
              adapter: str | None = None, backend: str | Backend = "transformers",
              base_url: str | None = None, api_key: str | None = None, fps: float | None = None,
              max_faces: int = 4, seed: int = 0) -> ChatSession:
        """A session over an explained result, an Analysis or a media path.

        A path is analysed; the opening explanation then comes from the engine (no
        model call), so starting a chat is cheap. The backend loads on first use.
        """
        source_path = None
        if isinstance(source, ExplainResult):
            result = source
        elif isinstance(source, Analysis):
            result = result_from_analysis(source, seed)
        else:
            from agent.graph import _analyze

            source_path = Path(source)
            if not source_path.exists():
                raise FaceReasonError(f"no such file: {source}")
            result = result_from_analysis(_analyze(source_path, fps, max_faces, None, None), seed)
        spec = {"backend": backend, "model": model, "adapter": adapter, "base_url": base_url,
                "api_key": api_key}
        be = backend if isinstance(backend, Backend) else None
        return cls(result=result, backend=be, source_path=source_path, seed=seed, backend_spec=spec)

    def get_backend(self) -> Backend:
        if self.backend is None:
            s = self.backend_spec
            self.backend = make_backend(s.get("backend", "transformers"), model=s.get("model"),
                                        adapter=s.get("adapter"), base_url=s.get("base_url"),
                                        api_key=s.get("api_key"))
        return self.backend


def _pick_track(session: ChatSession, question: str) -> int | None:
    ids = [t.track_id for t in session.analysis.tracks]
    if not ids:
        return None
    m = _FACE_RE.search(question)
    if m and int(m.group(1)) in ids:
        return int(m.group(1))
    return ids[0]


def _fallback_answer(session: ChatSession, track_id: int, log: list[dict], t: float | None) -> str:
    p = prompts.load_yaml("chat_fallback")
    windows = [c["result"] for c in log if c["name"] == "time_window" and "error" not in c["result"]]
    if t is not None and windows:
        w = windows[0]
        emo, prob = next(iter(w["emotions"].items()), ("no emotion reading", 0.0))
        aus = w["aus_present"]
        au_txt = (prompts.fill(p["at_time_aus"], items=", ".join(f"{k} {v:.1f}" for k, v in aus.items()))
                  if aus else p["at_time_no_aus"])
        text = prompts.fill(p["at_time"], time=f"{t:g}", track_id=track_id, emotion=emo,
                            prob=f"{prob:.2f}", aus=au_txt, valence=f"{w['valence']:+.2f}",
                            arousal=f"{w['arousal']:+.2f}")
        if "note" in w:
            tr = session.analysis.track(track_id)
            text += prompts.fill(p["not_visible"], track_id=track_id, start=f"{tr.start:.1f}",
                                 end=f"{tr.end:.1f}")
        if w.get("occlusion", 0.0) >= 0.5:
            text += prompts.fill(p["occluded"], occlusion=f"{w['occlusion']:.2f}")
        return text
    exp = next((e for e in session.result.explanations if e.track_id == track_id), None)
    if exp is None:
        return p["no_face"]
    c = exp.conclusion
    return prompts.fill(p["summary"], track_id=track_id,
                        conclusion=f"{c.label} (confidence {c.confidence:.2f})", caption=exp.caption)


def _usable(text: str) -> bool:
    s = text.strip()
    # A small model may echo tool markup or raw tool JSON back instead of answering.
    if len(s) < 12 or TOOL_CALL_OPEN in s or "<tool_" in s or s.startswith(("{", "[")):
        return False
    # A reasoner fine-tuned to explain may restate the whole explanation instead of
    # answering the question: that is not an answer to a follow-up.
    if s.startswith(HEAD_OBS):
        return False
    words = s.split()
    # A small model stuck in a loop repeats itself; such text says nothing.
    return len(set(words)) >= 0.3 * len(words)


def chat(session: ChatSession, question: str, *, on_token: TokenFn | None = None,
         max_new_tokens: int = MAX_NEW_TOKENS) -> ChatAnswer:
    """Answer one follow-up question about the session's video, through the tools."""
    if not question or not question.strip():
        raise FaceReasonError("the question is empty")
    a = session.analysis
    track_id = _pick_track(session, question)
    asked = times_in(question)
    if track_id is None:
        text = prompts.load_yaml("chat_fallback")["no_face"]
        session.history += [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
        return ChatAnswer(text=text, fallback_used=False)
    toolbox = Toolbox(a, track_id, session.source_path)
    log: list[dict] = []
    convo: list[dict] = []
    # Look at the moment the user asks about before the model answers.
    for i, t in enumerate(asked[:2]):
        call = ToolCall("time_window", {"start": max(t - WINDOW_HALF_S, 0.0), "end": t + WINDOW_HALF_S,
                                        "track_id": track_id}, id=f"pre_{i}")
        result = toolbox.run(call)
        log.append({"name": call.name, "arguments": call.arguments, "result": json.loads(result)})
        convo += [{"role": "assistant", "content": f"{TOOL_CALL_OPEN}\n{call.as_json()}\n{TOOL_CALL_CLOSE}"},
                  {"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result}]
    answer, fallback = "", False
    try:
        backend = session.get_backend()
        system = prompts.render("chat_system", tools_block=tools_block(backend))
        context = prompts.render("chat_user", evidence=_evidence(a, track_id),
                                 explanation=session.result.text or "")
        msgs = [{"role": "system", "content": system}, {"role": "user", "content": context},
                *session.history, {"role": "user", "content": question}, *convo]
        for _ in range(MAX_TOOL_ROUNDS + 1):
            g = backend.generate(msgs, tools=schemas(), max_new_tokens=max_new_tokens,
                                 on_token=on_token, stop_check=_chat_gate, seed=session.seed)
            parsed = parse_tool_calls(g.text, g.tool_calls)
            if parsed.calls and not parsed.malformed:
                msgs.append({"role": "assistant", "content": g.text})
                for call in parsed.calls:
                    result = toolbox.run(call)
                    log.append({"name": call.name, "arguments": call.arguments,
                                "result": json.loads(result)})
                    msgs.append({"role": "tool", "tool_call_id": call.id, "name": call.name,
                                 "content": result})
                continue
            answer = g.text.strip()
            break
    except BackendError:
        answer = ""
    track = a.track(track_id)
    claims = faithfulness.check_text_claims(answer, a, track, "answer") if answer else []
    if not _usable(answer) or claims:
        fallback = True
        answer = _fallback_answer(session, track_id, log, asked[0] if asked else None)
        claims = faithfulness.check_text_claims(answer, a, track, "answer")
    cited = times_in(answer) or asked
    session.history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    frame = cited[0] if cited else None
    if frame is not None:
        frame = min(max(frame, track.start), track.end)
    return ChatAnswer(text=answer, cited_times=cited, tool_calls=log, frame_time=frame,
                      track_id=track_id, fallback_used=fallback, unfaithful_claims=claims)


def _chat_gate(text: str) -> bool:
    # Stop a finished tool call, and a reply that has started looping.
    if TOOL_CALL_OPEN in text:
        return TOOL_CALL_CLOSE in text
    words = text.split()
    return len(words) > 40 and len(set(words[-40:])) < 12


def _evidence(analysis: Analysis, track_id: int) -> str:
    from agent import evidence

    return evidence.render(analysis, track_id if len(analysis.tracks) > 1 else None)
