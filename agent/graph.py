"""The reasoning agent as a langgraph graph, and `explain()`.

    perceive -> evidence -> model -+-> tools -> model          (bounded rounds)
                                   +-> repair -> model         (once)
                                   +-> parse -> validate -> END
                                   +-> fallback -> validate -> END

`perceive` runs the perception pipeline unless an Analysis was given;
`evidence` renders it compactly (agent/evidence.py) and builds the prompt;
`model` asks the backend, streaming tokens to `on_token` and cutting a turn
short once it is clearly off-format (a 135M base model often is: each wasted
token costs time on a 2-core CPU); a malformed tool call or an unusable answer
gets one repair turn, then the Exp-CoT engine answers with `fallback_used`
set. `validate` runs the faithfulness check on whatever is answered.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict

from langgraph.graph import END, StateGraph

import prompts
from agent import engine, faithfulness
from agent import evidence as ev
from agent.backends import Backend, BackendError, Generation, TokenFn, make_backend
from agent.schema import (
    HEAD_CAPTION,
    ExplainResult,
    Explanation,
    ParseError,
    parse_explanation,
    render_result_text,
)
from agent.toolbox import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, Toolbox, parse_tool_calls, schemas
from tools.analysis import Analysis
from tools.errors import FaceReasonError

MAX_TOOL_ROUNDS = 2
MAX_REPAIRS = 1
MAX_NEW_TOKENS = 400
# After this many characters a reply must have begun the layout or a tool call;
# otherwise the turn is cut short (see module docstring).
FORMAT_GATE_CHARS = 48
KEY_FRAMES = 4

ProgressFn = Callable[[str, float], None]


class AgentState(TypedDict, total=False):
    track_id: int
    messages: list[dict]
    question: str | None
    rounds: int
    repairs: int
    last: dict  # the last model turn: text, tool calls, problem
    tool_log: list[dict]
    explanation: Explanation | None
    fallback_reason: str | None
    generations: list[dict]


def tool_lines() -> str:
    """One line per tool, `name(arg: type, opt?: type): description`.

    Compact on purpose: the full JSON schemas cost ~500 prompt tokens, which a
    135M model on two CPU cores pays for on every turn.
    """
    lines = []
    for spec in (s["function"] for s in schemas()):
        params = spec.get("parameters", {})
        req = set(params.get("required", []))
        args = ", ".join(f"{k}{'' if k in req else '?'}: {v.get('type', 'any')}"
                         for k, v in params.get("properties", {}).items())
        lines.append(f"{spec['name']}({args}): {spec['description']}")
    return "\n".join(lines)


def tools_block(backend: Backend | None) -> str:
    """The tool list for the system prompt; empty when the template/API carries tools."""
    if backend is not None and backend.native_tools:
        return ""
    return prompts.render("tools_block", tools_text=tool_lines())


def build_messages(analysis: Analysis, track_id: int, question: str | None = None,
                   tools_text: str | None = None) -> list[dict]:
    """The opening conversation for one face (also what SFT data should start with)."""
    if tools_text is None:
        tools_text = tools_block(None)
    system = prompts.render("system", tools_block=tools_text, output_format=prompts.render(
        "output_format", labels=", ".join(analysis.emotion_labels)))
    q = prompts.render("question_suffix", question=question.strip()) if question else ""
    user = prompts.render("explain_user", evidence=ev.render(analysis, track_id), track_id=track_id,
                          question=q)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def format_gate(text: str) -> bool:
    """True when generation should stop: an off-format start, or a finished tool call."""
    s = text.lstrip()
    if TOOL_CALL_OPEN in s:
        return TOOL_CALL_CLOSE in s
    if len(s) < FORMAT_GATE_CHARS:
        return False
    head = s[:FORMAT_GATE_CHARS * 2].lower()
    return "key observations" not in head


def _gen_stats(g: Generation, kind: str) -> dict:
    return {"kind": kind, "tokens": g.n_tokens, "prompt_tokens": g.prompt_tokens, "ttft": g.ttft,
            "seconds": round(g.seconds, 3), "stopped_early": g.stopped_early, "images": g.n_images}


class _Agent:
    def __init__(self, analysis: Analysis, backend: Backend, toolbox: Toolbox,
                 on_token: TokenFn | None, images: list | None, seed: int,
                 max_new_tokens: int = MAX_NEW_TOKENS):
        self.analysis, self.backend, self.toolbox = analysis, backend, toolbox
        self.on_token, self.images, self.seed = on_token, images, seed
        self.max_new_tokens = max_new_tokens
        self.first_token_at: float | None = None

    # -- nodes
    def perceive(self, state: AgentState) -> AgentState:
        # The Analysis is made before the graph runs (once for all faces); this
        # node only checks the face it is asked about exists.
        self.analysis.track(state["track_id"])
        return {}

    def evidence(self, state: AgentState) -> AgentState:
        msgs = build_messages(self.analysis, state["track_id"], state.get("question"),
                              tools_block(self.backend))
        return {"messages": msgs, "rounds": 0, "repairs": 0, "tool_log": [], "generations": []}

    def model(self, state: AgentState) -> AgentState:
        def tok(piece: str) -> None:
            if self.first_token_at is None:
                self.first_token_at = time.perf_counter()
            if self.on_token is not None:
                self.on_token(piece)

        try:
            g = self.backend.generate(state["messages"], tools=schemas(), images=self.images,
                                      max_new_tokens=self.max_new_tokens, on_token=tok,
                                      stop_check=format_gate, seed=self.seed)
        except BackendError as exc:
            return {"last": {"text": "", "problem": str(exc), "fatal": True}}
        gens = [*state.get("generations", []), _gen_stats(g, "model")]
        text = g.text
        if TOOL_CALL_OPEN in text and TOOL_CALL_CLOSE in text:
            text = text[:text.rindex(TOOL_CALL_CLOSE) + len(TOOL_CALL_CLOSE)]
        parsed = parse_tool_calls(text, g.tool_calls)
        assistant: dict[str, Any] = {"role": "assistant", "content": text}
        if g.tool_calls:
            assistant["tool_calls"] = g.tool_calls
        last: dict[str, Any] = {"text": text, "calls": parsed.calls, "problem": None}
        if parsed.malformed:
            last["problem"] = "malformed tool call: " + "; ".join(parsed.errors)
        elif not parsed.calls:
            try:
                exp = parse_explanation(text, self.analysis.emotion_labels, state["track_id"])
                if not exp.caption.strip():
                    raise ParseError(f"the {HEAD_CAPTION} section is missing or empty")
                last["explanation"] = exp
            except ParseError as exc:
                why = "the reply was cut off as off-format" if g.stopped_early else str(exc)
                last["problem"] = f"not in the required layout ({why})"
        return {"messages": [*state["messages"], assistant], "last": last, "generations": gens}

    def route(self, state: AgentState) -> str:
        last = state["last"]
        if last.get("fatal"):
            return "fallback"
        if last.get("problem"):
            return "repair" if state["repairs"] < MAX_REPAIRS else "fallback"
        if last.get("calls"):
            return "tools" if state["rounds"] < MAX_TOOL_ROUNDS else "repair_or_fallback"
        return "parse"

    def route_after_limit(self, state: AgentState) -> str:
        return "repair" if state["repairs"] < MAX_REPAIRS else "fallback"

    def tools(self, state: AgentState) -> AgentState:
        msgs, log = list(state["messages"]), list(state["tool_log"])
        for call in state["last"]["calls"]:
            result = self.toolbox.run(call)
            log.append({"name": call.name, "arguments": call.arguments, "result": json.loads(result)})
            msgs.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": result})
        return {"messages": msgs, "tool_log": log, "rounds": state["rounds"] + 1}

    def repair(self, state: AgentState) -> AgentState:
        problem = state["last"].get("problem") or "too many tool rounds; answer now"
        msg = {"role": "user", "content": prompts.render("repair", problem=problem)}
        return {"messages": [*state["messages"], msg], "repairs": state["repairs"] + 1}

    def parse(self, state: AgentState) -> AgentState:
        return {"explanation": state["last"]["explanation"], "fallback_reason": None}

    def fallback(self, state: AgentState) -> AgentState:
        exp = engine.explain_track(self.analysis, self.analysis.track(state["track_id"]), self.seed)
        reason = state["last"].get("problem") or "the model gave no usable answer"
        return {"explanation": exp.model_copy(update={"fallback_used": True, "fallback_reason": reason}),
                "fallback_reason": reason}

    def validate(self, state: AgentState) -> AgentState:
        exp: Explanation = state["explanation"]
        track = self.analysis.track(state["track_id"])
        if not exp.fallback_used:
            cited = {o.au for o in exp.key_observations}
            exp = exp.model_copy(update={"evidence": [
                e for e in engine.evidence_items(self.analysis, track)
                if e.kind == "segment" or e.label in cited]})
        return {"explanation": exp.model_copy(update={
            "unfaithful_claims": faithfulness.check(exp, self.analysis)})}

    def build(self):
        g = StateGraph(AgentState)
        for name in ("perceive", "evidence", "model", "tools", "repair", "parse", "fallback", "validate"):
            g.add_node(name, getattr(self, name))
        g.set_entry_point("perceive")
        g.add_edge("perceive", "evidence")
        g.add_edge("evidence", "model")
        g.add_conditional_edges("model", self.route, {
            "tools": "tools", "repair": "repair", "fallback": "fallback", "parse": "parse",
            "repair_or_fallback": "limit"})
        g.add_node("limit", lambda s: {"last": {**s["last"], "problem": "too many tool rounds"}})
        g.add_conditional_edges("limit", self.route_after_limit, {"repair": "repair", "fallback": "fallback"})
        g.add_edge("tools", "model")
        g.add_edge("repair", "model")
        g.add_edge("parse", "validate")
        g.add_edge("fallback", "validate")
        g.add_edge("validate", END)
        return g.compile()


def key_frames(analysis: Analysis, track_id: int, source_path: Path | None) -> list:
    """Frames at the face's segment peaks (at most KEY_FRAMES), for a VLM."""
    if source_path is None:
        return []
    from tools.video import read_frames_at

    t = analysis.track(track_id)
    times = [s.peak_time for s in ev.segments(analysis, t)][:KEY_FRAMES] or [t.start]
    return read_frames_at(source_path, times)


def run_track(analysis: Analysis, track_id: int, backend: Backend, *, question: str | None = None,
              on_token: TokenFn | None = None, seed: int = 0, source_path: Path | None = None,
              images: list | None = None, max_new_tokens: int = MAX_NEW_TOKENS,
              label_set: list[str] | None = None) -> tuple[Explanation, dict]:
    """Run the graph for one face; returns the explanation and a trace (tool calls, turns)."""
    toolbox = Toolbox(analysis, track_id, source_path, label_set)
    if images is None and backend.is_vlm:
        images = key_frames(analysis, track_id, source_path)
    agent = _Agent(analysis, backend, toolbox, on_token, images, seed, max_new_tokens)
    # Each model turn is 2 steps (model + tools/repair); bound the whole walk.
    limit = 8 + 2 * (MAX_TOOL_ROUNDS + MAX_REPAIRS) * 2
    final = agent.build().invoke({"track_id": track_id, "question": question},
                                 {"recursion_limit": limit})
    trace = {"tool_calls": final.get("tool_log", []), "generations": final.get("generations", []),
             "first_token_at": agent.first_token_at,
             "messages": final.get("messages", [])}
    return final["explanation"], trace


def _analyze(path: Path, fps: float | None, max_faces: int, label_set: Any,
             on_progress: ProgressFn | None) -> Analysis:
    from tools.pipeline import analyze

    if isinstance(label_set, (list, tuple)):
        raise FaceReasonError("perception takes a label set by name (e.g. 'academic') or as a "
                              "YAML path, not as a list of labels")
    return analyze(path, fps=fps, max_faces=max_faces, label_set=label_set, progress=on_progress)


def explain(source: str | os.PathLike | Analysis, *, question: str | None = None,
            model: str | None = None, adapter: str | None = None,
            backend: str | Backend = "transformers", base_url: str | None = None,
            api_key: str | None = None, label_set: str | os.PathLike | list[str] | None = None,
            fps: float | None = None, max_faces: int = 4, on_token: TokenFn | None = None,
            on_progress: ProgressFn | None = None, seed: int = 0,
            max_new_tokens: int = MAX_NEW_TOKENS) -> ExplainResult:
    """Analyse a video/image (or take an Analysis) and explain every face in it.

    label_set: for a path, the perception label set (a name under prompts/labelsets/
    or a YAML path); with an Analysis its own labels are used and this only marks
    that a custom set is active (context scoring then uses those labels).

    Returns an ExplainResult: one Explanation per face track (an empty list and a
    message for a face-free input), the rendered text, and timings (perception,
    model load, generation, time to first token, tokens/s, total).
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    source_path: Path | None = None
    if isinstance(source, Analysis):
        analysis = source
    else:
        source_path = Path(source)
        if not source_path.exists():
            raise FaceReasonError(f"no such file: {source}")
        analysis = _analyze(source_path, fps, max_faces, label_set, on_progress)
    timings["perception_s"] = time.perf_counter() - t0
    if analysis.no_face:
        msg = prompts.load_yaml("chat_fallback")["no_face"]
        timings["total_s"] = time.perf_counter() - t0
        return ExplainResult(analysis=analysis, explanations=[], model="", backend=str(backend),
                             timings=timings, text=msg, message=msg)
    if on_progress is not None:
        on_progress("model", 0.0)
    t1 = time.perf_counter()
    be = make_backend(backend, model=model, adapter=adapter, base_url=base_url, api_key=api_key)
    timings["model_load_s"] = time.perf_counter() - t1
    explanations, traces = [], []
    t2 = time.perf_counter()
    first_token = None
    for i, track in enumerate(analysis.tracks):
        exp, trace = run_track(analysis, track.track_id, be, question=question, on_token=on_token,
                               seed=seed, source_path=source_path, max_new_tokens=max_new_tokens,
                               label_set=list(analysis.emotion_labels) if label_set else None)
        if first_token is None and trace["first_token_at"] is not None:
            first_token = trace["first_token_at"] - t0
        explanations.append(exp)
        traces.append(trace)
        if on_progress is not None:
            on_progress("model", (i + 1) / len(analysis.tracks))
    gen_s = time.perf_counter() - t2
    tokens = sum(g["tokens"] for t in traces for g in t["generations"])
    model_s = sum(g["seconds"] for t in traces for g in t["generations"])
    # Decode speed excludes each turn's prompt processing (up to its first token).
    decode_s = sum(g["seconds"] - (g["ttft"] or 0.0) for t in traces for g in t["generations"])
    decode_tokens = sum(max(g["tokens"] - 1, 0) for t in traces for g in t["generations"])
    timings.update({"generation_s": gen_s, "tokens": float(tokens),
                    "tokens_per_s": tokens / model_s if model_s > 0 else 0.0,
                    "decode_tokens_per_s": decode_tokens / decode_s if decode_s > 0 else 0.0,
                    "total_s": time.perf_counter() - t0})
    if first_token is not None:
        timings["first_token_s"] = first_token
    stats = {"turns": sum(len(t["generations"]) for t in traces),
             "generations": [g for t in traces for g in t["generations"]],
             "tool_calls": [c for t in traces for c in t["tool_calls"]],
             "fallbacks": sum(e.fallback_used for e in explanations)}
    return ExplainResult(analysis=analysis, explanations=explanations, model=be.model_id,
                         backend=be.name, timings=timings,
                         text=render_result_text(analysis, explanations), stats=stats)


def result_from_analysis(analysis: Analysis, seed: int = 0) -> ExplainResult:
    """An engine-only result (no model), e.g. to start a chat cheaply."""
    exps = engine.explain(analysis, seed)
    msg = "" if exps else prompts.load_yaml("chat_fallback")["no_face"]
    return ExplainResult(analysis=analysis, explanations=exps, model="exp-cot-engine", backend="engine",
                         text=render_result_text(analysis, exps, msg) or msg, message=msg)
