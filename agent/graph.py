"""The agent loop (a langgraph graph) and `explain()`.

One loop serves every caller: `explain` (each face of a video, batched),
`chat` (one face, one question), the evaluation table and the training-data
builder (the same prompts). A `Task` is one face's conversation with the
model; the graph runs a batch of them together:

    START -> model -> act -+-> model    (a face asked for a tool, or its reply needs a repair)
                           +-> END      (every face has its record, or has given up)

`model` asks the backend for one turn of every open task at once, each under
its own JSON schema (agent/decision.py: the final record, or a tool request
while tool rounds are left); `act` reads each reply: a tool request is
answered by the face's Toolbox, an unusable reply gets one repair message, a
valid record closes the task. After the loop, agent/render.py writes the text
from each record; a face whose model never produced a usable record is
decided by the Exp-CoT engine instead, flagged `fallback_used`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypedDict

import prompts
from agent import engine, faithfulness, render
from agent import evidence as ev
from agent.answers import (
    ENDS,
    WHEN,
    absent_answer,
    answer_of,
    answer_remarks,
    asked_about,
    asked_absent,
    asked_why,
    fallback_answer,
    times_in,
    weak_readings,
)
from agent.backends import Backend, BackendError, Request, RulesBackend, TokenFn, make_backend
from agent.decision import (
    Answer,
    Decision,
    RecordError,
    absent_schema,
    answer_schema,
    decision_schema,
    is_tool_request,
    lead_with,
    look_schema,
    parse_answer,
    parse_decision,
    parse_tool_request,
    parse_turn,
    turn_schema,
)
from agent.schema import ExplainResult, Explanation, render_result_text
from agent.toolbox import Toolbox, tool_lines
from tools.analysis import Analysis
from tools.errors import FaceReasonError

MAX_TOOL_ROUNDS = 2
MAX_REPAIRS = 1
MAX_NEW_TOKENS = 160  # per turn; a record is ~50-70 tokens, a tool request ~20
KEY_FRAMES = 4

ProgressFn = Callable[[str, float], None]


# ------------------------------------------------------------------ prompts
def decide_messages(analysis: Analysis, track_id: int) -> list[dict]:
    """The opening turns for deciding one face (also what training rows start with)."""
    track = analysis.track(track_id)
    reading = engine.conclude(analysis, track).label
    system = prompts.render("system", labels=", ".join(analysis.emotion_labels), tools=tool_lines())
    user = prompts.render("decide_user", evidence=ev.render(analysis, track_id, {track_id: reading}),
                          track_id=track_id)
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def answer_messages(analysis: Analysis, track_id: int, question: str,
                    decision: Decision | None) -> list[dict]:
    """The opening turns for answering a question about one face: its evidence, the decision
    of its explanation and the question (each question stands on its own: a follow-up such
    as "and at 12 s?" names what it asks about)."""
    track = analysis.track(track_id)
    reading = engine.conclude(analysis, track).label
    system = prompts.render("answer_system", labels=", ".join(analysis.emotion_labels),
                            tools=tool_lines())
    user = prompts.render("answer_user", evidence=ev.render(analysis, track_id, {track_id: reading}),
                          decision=decision.to_json() if decision else "none",
                          track_id=track_id, question=_one_line(question))
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def _one_line(text: str, limit: int = 300) -> str:
    return re.sub(r"\s+", " ", text).strip()[:limit]


# ------------------------------------------------------------------ tasks
@dataclass
class Task:
    """One face's conversation with the model, until it yields a record."""

    analysis: Analysis
    track_id: int
    kind: Literal["decide", "answer"]
    messages: list[dict]
    toolbox: Toolbox
    question: str = ""
    images: list | None = None
    on_token: TokenFn | None = None
    max_new_tokens: int = MAX_NEW_TOKENS
    rounds: int = 0
    repairs: int = 0
    record: Decision | Answer | None = None
    problem: str | None = None
    failed: bool = False
    pending: str | None = None  # the last reply, not yet acted on
    tool_log: list[dict] = field(default_factory=list)
    generations: list[dict] = field(default_factory=list)
    decided_by: Literal["model", "engine"] = "model"

    @property
    def open(self) -> bool:
        return self.record is None and not self.failed

    @property
    def facts(self) -> ev.FaceFacts:
        return ev.facts(self.analysis, self.analysis.track(self.track_id))

    def refs(self) -> list[str]:
        f = self.facts
        return [*f.segments, *f.events, *self.toolbox.results]

    def segment_labels(self) -> dict[str, str]:
        return {i: s.label for i, s in self.facts.segments.items()}

    def final_schema(self) -> dict:
        labels = self.analysis.emotion_labels
        f = self.facts
        if self.kind == "decide":
            return decision_schema(f, labels, faithfulness.true_remarks(self.analysis, f.track, labels))
        segs = self.segment_labels()
        if segs and (absent := asked_absent(self.question, set(segs.values()))):
            a = absent_answer(f, absent)  # the rules' answer; the model picks the held stretches
            held = segs[a.ref[0]]
            return absent_schema([i for i, lab in segs.items() if lab == held], a.note)
        refs, asked = self.refs(), asked_about(self.question, set(segs.values()))
        why = asked_why(self.question, set(segs.values()))
        if why:  # the reasons for a reading: its stretches and the events of its own pattern
            events, pattern = f.events, ev.prototype_aus(why)
            refs = [r for r in refs if r not in events or events[r].au in pattern]
            asked = why
        weak = weak_readings([t["result"] for t in self.tool_log])
        schema = answer_schema(refs, [asked] if asked else labels, segs,
                               answer_remarks(self.question, labels, weak))
        if asked and not why:  # "Is she ever afraid?": the answer opens on a stretch of fear
            stretches = [i for i, lab in segs.items() if lab == asked]  # in time order
            if WHEN.search(self.question):  # "when does he start / stop smiling?": the first / last
                stretches = stretches[-1:] if ENDS.search(self.question) else stretches[:1]
            schema = lead_with(schema, stretches)
        return schema

    def request(self) -> Request:
        asked = times_in(self.question) if self.kind == "answer" and self.rounds == 0 else []
        if asked:  # a question about a time is answered from that time: look there first
            schema = look_schema(asked)
        else:
            schema = turn_schema(self.final_schema(), tools_allowed=self.rounds < MAX_TOOL_ROUNDS)
        return Request(self.messages, schema, self.images, self.max_new_tokens, self.on_token)

    def act(self) -> None:
        """Read the pending reply: a tool request, a record, or a problem to repair."""
        text, self.pending = self.pending or "", None
        self.messages = [*self.messages, {"role": "assistant", "content": text}]
        try:
            obj = parse_turn(text)
            if is_tool_request(obj):
                if self.rounds >= MAX_TOOL_ROUNDS:
                    raise RecordError("no more tool rounds are left; answer now")
                req = parse_tool_request(obj)
                result = self.toolbox.run(req)
                self.tool_log.append({"name": req.tool, "arguments": req.args, "result": result})
                self.messages.append({"role": "tool", "name": req.tool,
                                      "content": json.dumps(result, separators=(",", ":"))})
                self.rounds += 1
                return
            if self.kind == "decide":
                self.record = parse_decision(obj, self.facts, self.analysis.emotion_labels)
            else:
                self.record = parse_answer(obj, self.refs(), self.analysis.emotion_labels,
                                           self.segment_labels())
        except RecordError as exc:
            self.problem = str(exc)
            if self.repairs >= MAX_REPAIRS:
                self.failed = True
                return
            self.repairs += 1
            self.messages.append({"role": "user", "content": prompts.render("repair", problem=str(exc))})


class LoopState(TypedDict):
    tasks: list[Task]


def _gen_stats(g: Any, kind: str) -> dict:
    return {"kind": kind, "tokens": g.n_tokens, "prompt_tokens": g.prompt_tokens,
            "cached_tokens": g.cached_tokens, "ttft": g.ttft, "seconds": round(g.seconds, 3),
            "constrained": g.constrained, "images": g.n_images, "steps": g.steps}


def build_loop(backend: Backend, *, temperature: float = 0.0, seed: int = 0):
    """The compiled graph: model <-> act over a batch of tasks."""
    from langgraph.graph import END, START, StateGraph  # ~1 s: loaded when a loop first runs

    def model(state: LoopState) -> LoopState:
        todo = [t for t in state["tasks"] if t.open]
        try:
            gens = backend.generate_batch([t.request() for t in todo], temperature=temperature, seed=seed)
        except BackendError as exc:
            for t in todo:
                t.problem, t.failed = str(exc), True
            return {"tasks": state["tasks"]}
        for t, g in zip(todo, gens, strict=True):
            t.pending = g.text
            t.generations.append(_gen_stats(g, t.kind))
        return {"tasks": state["tasks"]}

    def act(state: LoopState) -> LoopState:
        for t in state["tasks"]:
            if t.open and t.pending is not None:
                t.act()
        return {"tasks": state["tasks"]}

    def route(state: LoopState) -> str:
        return "model" if any(t.open for t in state["tasks"]) else END

    g = StateGraph(LoopState)
    g.add_node("model", model)
    g.add_node("act", act)
    g.add_edge(START, "model")
    g.add_edge("model", "act")
    g.add_conditional_edges("act", route, {"model": "model", END: END})
    return g.compile()


def run_tasks(tasks: list[Task], backend: Backend, *, temperature: float = 0.0,
              seed: int = 0) -> list[Task]:
    """Run the loop until every task has a record or has failed (with the rules backend, the
    engine decides and the rules answer in place of a model)."""
    if not tasks:
        return tasks
    if isinstance(backend, RulesBackend):
        for t in tasks:
            t.record = (engine.decide(t.analysis, t.analysis.track(t.track_id)) if t.kind == "decide"
                        else fallback_answer(t, t.question))
            t.decided_by = "engine"
        return tasks
    limit = 4 * (MAX_TOOL_ROUNDS + MAX_REPAIRS + 2)
    build_loop(backend, temperature=temperature, seed=seed).invoke(
        {"tasks": tasks}, {"recursion_limit": limit})
    return tasks


def decide_task(analysis: Analysis, track_id: int, *, source_path: Path | None = None,
                images: list | None = None, on_token: TokenFn | None = None,
                label_set: list[str] | None = None, max_new_tokens: int = MAX_NEW_TOKENS) -> Task:
    return Task(analysis, track_id, "decide", decide_messages(analysis, track_id),
                Toolbox(analysis, track_id, source_path, label_set), "", images, on_token, max_new_tokens)


def answer_task(analysis: Analysis, track_id: int, question: str, decision: Decision | None, *,
                source_path: Path | None = None, on_token: TokenFn | None = None,
                max_new_tokens: int = MAX_NEW_TOKENS) -> Task:
    return Task(analysis, track_id, "answer", answer_messages(analysis, track_id, question, decision),
                Toolbox(analysis, track_id, source_path), question, None, on_token, max_new_tokens)


# ------------------------------------------------------------------ rendering
def explanation_of(task: Task, seed: int = 0) -> Explanation:
    """The rendered explanation of a finished decide task (the engine's where it failed)."""
    a, track = task.analysis, task.analysis.track(task.track_id)
    if isinstance(task.record, Decision):
        return render.explanation(a, track, task.record, seed=seed, decided_by=task.decided_by)
    reason = task.problem or "the model gave no usable answer"
    return engine.explain_track(a, track, seed, fallback_reason=reason)


# ------------------------------------------------------------------ explain
def key_frames(analysis: Analysis, track_id: int, source_path: Path | None) -> list:
    """Frames at the face's segment peaks (at most KEY_FRAMES), for a VLM."""
    if source_path is None:
        return []
    from tools.video import read_frames_at

    t = analysis.track(track_id)
    times = [s.peak_time for s in ev.segments(analysis, t)][:KEY_FRAMES] or [t.start]
    return read_frames_at(source_path, times)


def perceive(path: Path, fps: float | None = None, max_faces: int = 4, label_set: Any = None,
             on_progress: ProgressFn | None = None, limits: Any = None) -> Analysis:
    """The perception an explanation starts from: a media path -> its Analysis, with the
    explain options (label set by name or YAML path, tools.video.Limits, progress)."""
    from tools.pipeline import analyze

    if isinstance(label_set, (list, tuple)):
        raise FaceReasonError("perception takes a label set by name (e.g. 'academic') or as a "
                              "YAML path, not as a list of labels")
    kwargs = {"limits": limits} if limits is not None else {}
    return analyze(path, fps=fps, max_faces=max_faces, label_set=label_set, progress=on_progress,
                   include_landmarks=False, **kwargs)


def explain(source: str | os.PathLike | Analysis, *, question: str | None = None,
            model: str | None = None, adapter: str | None = None,
            backend: str | Backend = "auto", base_url: str | None = None,
            api_key: str | None = None, label_set: str | os.PathLike | None = None,
            fps: float | None = None, max_faces: int = 4, limits: Any = None,
            on_token: TokenFn | None = None, on_progress: ProgressFn | None = None,
            seed: int = 0, max_new_tokens: int = MAX_NEW_TOKENS) -> ExplainResult:
    """Analyse a video/image (or take an Analysis) and explain every face in it.

    label_set: the perception label set for a path (a name under prompts/labelsets/ or a
    YAML path); an Analysis brings its own. limits: tools.video.Limits for a path.
    With a question, each face's explanation answers it in its own line.

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
        analysis = perceive(source_path, fps, max_faces, label_set, on_progress, limits)
    timings["perception_s"] = time.perf_counter() - t0
    if analysis.no_face:
        msg = prompts.load_yaml("render")["no_face"]
        timings["total_s"] = time.perf_counter() - t0
        return ExplainResult(analysis=analysis, explanations=[], model="", backend=str(backend),
                             timings=timings, text=msg, message=msg)
    if on_progress is not None:
        on_progress("model", 0.0)
    t1 = time.perf_counter()
    be = make_backend(backend, model=model, adapter=adapter, base_url=base_url, api_key=api_key)
    timings["model_load_s"] = time.perf_counter() - t1
    first: list[float] = []

    def token(piece: str) -> None:
        if not first:
            first.append(time.perf_counter() - t0)
        if on_token is not None:
            on_token(piece)

    t2 = time.perf_counter()
    custom = list(analysis.emotion_labels) if label_set else None
    tasks = [decide_task(analysis, t.track_id, source_path=source_path, on_token=token,
                         images=key_frames(analysis, t.track_id, source_path) if be.is_vlm else None,
                         label_set=custom, max_new_tokens=max_new_tokens)
             for t in analysis.tracks]
    run_tasks(tasks, be, seed=seed)
    explanations = [explanation_of(t, seed) for t in tasks]
    traces = list(tasks)
    if question and question.strip():
        asks = [answer_task(analysis, t.track_id, question, t.record if isinstance(t.record, Decision)
                            else None, source_path=source_path, max_new_tokens=max_new_tokens)
                for t in tasks]
        run_tasks(asks, be, seed=seed)
        for k, ask in enumerate(asks):
            got = answer_of(ask, question, seed)
            explanations[k] = explanations[k].model_copy(update={
                "answer": got.text, "withheld": [*explanations[k].withheld, *got.withheld]})
        traces += asks
    if on_progress is not None:
        on_progress("model", 1.0)
    explanations = [_validated(e, analysis) for e in explanations]
    gens = [g for t in traces for g in t.generations]
    gen_s = time.perf_counter() - t2
    tokens = sum(g["tokens"] for g in gens)
    model_s = sum(g["seconds"] for g in gens)
    # Decode speed excludes each turn's prompt processing (up to its first token).
    timed = [g for g in gens if g["ttft"] is not None]
    decode_s = sum(g["seconds"] - g["ttft"] for g in timed)
    decode_tokens = sum(max(g["tokens"] - 1, 0) for g in timed)
    timings.update({"generation_s": gen_s, "tokens": float(tokens),
                    "tokens_per_s": tokens / model_s if model_s > 0 else 0.0,
                    "decode_tokens_per_s": decode_tokens / decode_s if decode_s > 0 else 0.0,
                    "total_s": time.perf_counter() - t0})
    if first:
        timings["first_token_s"] = first[0]
    stats = {"turns": len(gens), "generations": gens,
             "tool_calls": [c for t in traces for c in t.tool_log],
             "records": [t.record.model_dump() if t.record is not None else None for t in traces],
             "fallbacks": sum(e.fallback_used for e in explanations)}
    return ExplainResult(analysis=analysis, explanations=explanations, model=be.model_id,
                         backend=be.name, timings=timings,
                         text=render_result_text(analysis, explanations), stats=stats)


def _validated(e: Explanation, analysis: Analysis) -> Explanation:
    """The faithfulness check over what is shown (rendered text is faithful by construction,
    so a violation here is a bug in the renderer, reported rather than hidden)."""
    from agent import faithfulness

    return e.model_copy(update={"unfaithful_claims": faithfulness.check(e, analysis)})


def result_from_analysis(analysis: Analysis, seed: int = 0) -> ExplainResult:
    """An engine-only result (no model), e.g. to start a chat cheaply."""
    exps = [_validated(e, analysis) for e in engine.explain(analysis, seed)]
    msg = "" if exps else prompts.load_yaml("render")["no_face"]
    return ExplainResult(analysis=analysis, explanations=exps, model="exp-cot-engine", backend="engine",
                         text=render_result_text(analysis, exps, msg) or msg, message=msg)
