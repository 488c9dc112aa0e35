"""Tools the reasoning model can call, all answered from one `Analysis`.

Calls arrive in the Hermes/Qwen format that chat templates with tool support
use: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` in the
assistant text (or as structured `tool_calls` from an OpenAI-compatible
server). `parse_tool_calls` reads them tolerantly and reports what is wrong
with a malformed one, so the graph can ask for one repair.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import prompts
from agent import evidence as ev
from tools.analysis import Analysis, Track

TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


class ToolError(ValueError):
    """A tool call that names an unknown tool or carries bad arguments; the text goes back to the model."""


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str = ""

    def as_json(self) -> str:
        return json.dumps({"name": self.name, "arguments": self.arguments})


@dataclass
class ParsedCalls:
    calls: list[ToolCall] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def malformed(self) -> bool:
        return bool(self.errors)


def schemas() -> list[dict]:
    """The tools in OpenAI function-calling form."""
    return [{"type": "function", "function": t} for t in prompts.load_yaml("tools")]


def _tool_specs() -> dict[str, dict]:
    return {t["name"]: t for t in prompts.load_yaml("tools")}


_BLOCK_RE = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)
_FENCE_RE = re.compile(r"^```(?:json)?\s*|\s*```$")


def _loads_lenient(body: str) -> Any:
    body = _FENCE_RE.sub("", body.strip())
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        # Small models often add prose after the object; keep the first complete object.
        obj, _ = json.JSONDecoder().raw_decode(body[body.index("{"):]) if "{" in body else (None, 0)
        if obj is None:
            raise
        return obj


def _as_call(obj: Any, i: int, call_id: str = "") -> ToolCall:
    if not isinstance(obj, dict):
        raise ToolError(f"tool call {i + 1} is not a JSON object")
    if "function" in obj and isinstance(obj["function"], dict):  # OpenAI structured form
        call_id = obj.get("id", call_id)
        obj = obj["function"]
    name = obj.get("name")
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError as exc:
            raise ToolError(f"tool call {i + 1}: arguments are not valid JSON ({exc.msg})") from None
    if not isinstance(name, str) or not name:
        raise ToolError(f"tool call {i + 1} has no \"name\"")
    if not isinstance(args, dict):
        raise ToolError(f"tool call {i + 1}: \"arguments\" must be an object")
    return ToolCall(name=name, arguments=args, id=call_id or f"call_{i}")


def parse_tool_calls(text: str, structured: list[dict] | None = None) -> ParsedCalls:
    """Tool calls in `text` (Hermes `<tool_call>` blocks) and/or OpenAI `tool_calls`."""
    out = ParsedCalls()
    for i, obj in enumerate(structured or []):
        try:
            out.calls.append(_as_call(obj, i))
        except ToolError as exc:
            out.errors.append(str(exc))
    if TOOL_CALL_OPEN not in text:
        return out
    for j, m in enumerate(_BLOCK_RE.finditer(text)):
        i = len(out.calls) + j
        try:
            out.calls.append(_as_call(_loads_lenient(m.group(1)), i))
        except (json.JSONDecodeError, ValueError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            out.errors.append(msg if isinstance(exc, ToolError) else
                              f"tool call {i + 1} is not valid JSON ({msg})")
    return out


def _check_args(spec: dict, args: dict) -> dict:
    props = spec.get("parameters", {}).get("properties", {})
    missing = [k for k in spec.get("parameters", {}).get("required", []) if k not in args]
    if missing:
        raise ToolError(f"{spec['name']}: missing argument(s) {', '.join(missing)}")
    unknown = [k for k in args if k not in props]
    if unknown:
        raise ToolError(f"{spec['name']}: unknown argument(s) {', '.join(unknown)}; "
                        f"expected {', '.join(props) or 'none'}")
    clean = {}
    for k, v in args.items():
        kind = props[k].get("type")
        try:
            if kind == "number":
                clean[k] = float(v)
            elif kind == "integer":
                clean[k] = int(v)
            else:
                clean[k] = str(v)
        except (TypeError, ValueError):
            raise ToolError(f"{spec['name']}: argument {k} must be a {kind}, got {v!r}") from None
    return clean


def _r(x: float, nd: int = 2) -> float:
    return round(float(x), nd)


class Toolbox:
    """The callable tools over one Analysis; `default_track` is the face being explained."""

    def __init__(self, analysis: Analysis, default_track: int | None = None,
                 source_path: str | Path | None = None, label_set: list[str] | None = None):
        self.analysis = analysis
        self.default_track = default_track if default_track is not None else (
            analysis.tracks[0].track_id if analysis.tracks else 0)
        self.source_path = Path(source_path) if source_path else None
        self.label_set = label_set

    # -- dispatch
    def call(self, call: ToolCall) -> dict:
        specs = _tool_specs()
        if call.name not in specs:
            raise ToolError(f"unknown tool \"{call.name}\"; available: {', '.join(specs)}")
        args = _check_args(specs[call.name], call.arguments)
        return getattr(self, call.name)(**args)

    def run(self, call: ToolCall) -> str:
        """The tool's answer as compact JSON, or {"error": ...} for a bad call."""
        try:
            result = self.call(call)
        except ToolError as exc:
            result = {"error": str(exc)}
        return json.dumps(result, separators=(",", ":"))

    def _track(self, track_id: int | None) -> Track:
        tid = self.default_track if track_id is None else track_id
        try:
            return self.analysis.track(tid)
        except KeyError as exc:
            raise ToolError(str(exc.args[0])) from None

    def _aus_at(self, t: Track, rows: np.ndarray) -> dict[str, float]:
        """Mean intensity over rows of AUs present (occurrence) in any of them."""
        if t.aus is None:
            return {}
        occ = ev.occurrence(self.analysis, t)
        aus = np.asarray(t.aus, dtype=float)[rows]
        present = occ[rows].any(axis=0) if occ is not None else aus.max(axis=0) >= 1.0
        return {c: _r(aus[:, k].mean()) for k, c in enumerate(self.analysis.au_codes) if present[k]}

    # -- tools (names and arguments match prompts/tools.yaml)
    def time_window(self, start: float, end: float, track_id: int | None = None) -> dict:
        t = self._track(track_id)
        if end < start:
            start, end = end, start
        rows = ev.window(t, start, end)
        emo = ev.mean_emotions(self.analysis, t, rows)
        val, aro = ev.mean_affect(t, rows)
        ts = np.asarray(t.timestamps, dtype=float)[rows]
        out: dict[str, Any] = {
            "track_id": t.track_id, "start": _r(ts.min()), "end": _r(ts.max()), "frames": int(rows.size),
            "aus_present": self._aus_at(t, rows),
            "emotions": {k: _r(v) for k, v in sorted(emo.items(), key=lambda kv: -kv[1])[:3]},
            "valence": _r(val), "arousal": _r(aro),
        }
        if t.occlusion is not None:
            out["occlusion"] = _r(np.asarray(t.occlusion, dtype=float)[rows].mean())
        if start > t.end + ev.TIME_TOLERANCE_S or end < t.start - ev.TIME_TOLERANCE_S:
            out["note"] = f"face {t.track_id} is only visible {t.start:.1f}-{t.end:.1f} s"
        return out

    def compare_moments(self, t1: float, t2: float, track_id: int | None = None) -> dict:
        t = self._track(track_id)
        half = 0.25
        a = self.time_window(t1 - half, t1 + half, t.track_id)
        b = self.time_window(t2 - half, t2 + half, t.track_id)
        aus = sorted(set(a["aus_present"]) | set(b["aus_present"]))
        au_change = {c: _r(b["aus_present"].get(c, 0.0) - a["aus_present"].get(c, 0.0)) for c in aus}
        e1 = ev.mean_emotions(self.analysis, t, ev.window(t, t1 - half, t1 + half))
        e2 = ev.mean_emotions(self.analysis, t, ev.window(t, t2 - half, t2 + half))
        emo_change = {k: _r(e2[k] - e1.get(k, 0.0)) for k in e2}
        top = sorted(emo_change.items(), key=lambda kv: -abs(kv[1]))[:3]
        return {"track_id": t.track_id, "t1": _r(t1), "t2": _r(t2),
                "at_t1": {"aus": a["aus_present"], "emotions": a["emotions"]},
                "at_t2": {"aus": b["aus_present"], "emotions": b["emotions"]},
                "au_change": {c: v for c, v in au_change.items() if abs(v) >= 0.1},
                "emotion_change": dict(top),
                "valence_change": _r(b["valence"] - a["valence"])}

    def inspect_face(self, track_id: int) -> dict:
        t = self._track(track_id)
        pose = np.asarray(t.pose, dtype=float)
        return {
            "track_id": t.track_id, "start": _r(t.start), "end": _r(t.end), "frames": t.n,
            "segments": [{"label": s.label, "start": _r(s.start), "end": _r(s.end),
                          "mean_prob": _r(s.mean_prob)} for s in ev.segments(self.analysis, t)],
            "strongest_aus": {c: _r(v) for c, v in ev.top_aus(self.analysis, t, k=5)},
            "events": len(ev.au_spans(self.analysis, t)),
            "occluded_share": _r(ev.occluded_share(t)),
            "mean_pose_deg": {"pitch": _r(pose[:, 0].mean(), 1), "yaw": _r(pose[:, 1].mean(), 1),
                              "roll": _r(pose[:, 2].mean(), 1)} if t.n else {},
            "other_faces": [x.track_id for x in self.analysis.tracks if x.track_id != t.track_id],
        }

    def clip_context(self) -> dict:
        ctx = self.analysis.context
        if ctx.status == "off" and self.source_path is not None and self.analysis.tracks:
            ctx = self._score_context()
        return {"status": ctx.status, "model": ctx.model, "scene": ctx.scene, "face": ctx.face,
                "message": ctx.message}

    def _score_context(self):
        # Scoring needs pixels: read the segment peak frames of the explained face.
        from tools.context import score_context
        from tools.video import read_frames_at

        t = self._track(None)
        times = [s.peak_time for s in ev.segments(self.analysis, t)][:4] or [t.start]
        frames = read_frames_at(self.source_path, times)
        crops = []
        for fr, tm in zip(frames, times, strict=False):
            i = int(np.argmin(np.abs(np.asarray(t.timestamps, dtype=float) - tm)))
            x0, y0, x1, y1 = (int(v) for v in np.asarray(t.bbox[i]))
            crop = fr[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)]
            if crop.size:
                crops.append(crop)
        ctx = score_context(frames, crops, label_set=self.label_set)
        self.analysis.context = ctx
        return ctx

    def list_events(self, track_id: int | None = None, au: str | None = None,
                    start: float | None = None, end: float | None = None) -> dict:
        t = self._track(track_id)
        spans = sorted(ev.au_spans(self.analysis, t), key=lambda s: s.start)
        if au:
            au = au.upper().replace(" ", "")
            spans = [s for s in spans if s.au == au]
        lo = start if start is not None else -np.inf
        hi = end if end is not None else np.inf
        spans = [s for s in spans if s.end >= lo - ev.TIME_TOLERANCE_S and s.start <= hi + ev.TIME_TOLERANCE_S]
        return {"track_id": t.track_id,
                "events": [{"au": s.au, "name": s.name, "onset": _r(s.start), "apex": _r(s.apex),
                            "offset": _r(s.end), "peak": _r(s.peak), "micro": s.micro}
                           for s in spans[:20]],
                "total": len(spans)}
