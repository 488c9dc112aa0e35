"""Tools the reasoning model can call, all answered from one `Analysis`.

A model asks for a tool with a JSON record, `{"tool": "moment", "args": {"t": 7}}`
(agent/decision.py's ToolRequest, enforced by the same constrained decoding as
its answers). Each result carries an id the answer may cite: W1, W2 ... for a
look at a moment or window, C1 ... for a comparison; events and segments keep
the face's own segment and event ids (happiness1, AU12a).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import prompts
from agent import evidence as ev
from agent.decision import ToolRequest
from tools.analysis import Analysis, Track

MOMENT_HALF_S = 0.5  # `moment(t)` looks at t +- this


class ToolError(ValueError):
    """A tool call that names an unknown tool or carries bad arguments; the text goes back to the model."""


def schemas() -> list[dict]:
    """The tools in OpenAI function-calling form."""
    return [{"type": "function", "function": t} for t in prompts.load_yaml("tools")]


def _tool_specs() -> dict[str, dict]:
    return {t["name"]: t for t in prompts.load_yaml("tools")}


def tool_lines() -> str:
    """The tools as one line of signatures, `name(arg, opt?)`, for the system prompt.

    Terse on purpose: every prompt token costs ~2 ms on two CPU cores, and a fine-tuned
    model learns what each tool returns. Optional face ids are left out (a prompt is
    about one face); prompts/tools.yaml has the descriptions.
    """
    sigs = []
    for spec in prompts.load_yaml("tools"):
        params = spec.get("parameters", {})
        req = set(params.get("required", []))
        args = ", ".join(f"{k}{'' if k in req else '?'}" for k in params.get("properties", {})
                         if k in req or k != "track_id")
        sigs.append(f"{spec['name']}({args})")
    return ", ".join(sigs)


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
        self.counts: dict[str, int] = {}
        self.context = None
        self.results: dict[str, dict] = {}  # citable results by id (W1, C1, ...)

    # -- dispatch
    def call(self, req: ToolRequest) -> dict:
        specs = _tool_specs()
        if req.tool not in specs:
            raise ToolError(f"unknown tool \"{req.tool}\"; available: {', '.join(specs)}")
        args = _check_args(specs[req.tool], req.args)
        return getattr(self, req.tool)(**args)

    def run(self, req: ToolRequest) -> dict:
        """The tool's answer (with an id where it is citable), or {"error": ...} for a bad call."""
        try:
            return self.call(req)
        except ToolError as exc:
            return {"error": str(exc)}

    def _new_id(self, prefix: str) -> str:
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]}"

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
    def _window(self, t: Track, start: float, end: float) -> dict:
        if end < start:
            start, end = end, start
        rows = ev.window(t, start, end)
        emo = ev.mean_emotions(self.analysis, t, rows)
        val, aro = ev.mean_affect(t, rows)
        ts = np.asarray(t.timestamps, dtype=float)[rows]
        top = sorted(emo.items(), key=lambda kv: -kv[1])[:3]
        out: dict[str, Any] = {
            "track_id": t.track_id, "start": _r(ts.min()), "end": _r(ts.max()), "frames": int(rows.size),
            "aus_present": self._aus_at(t, rows),
            "emotions": {k: _r(v) for k, v in top},
            "label": top[0][0] if top else None,
            "valence": _r(val), "arousal": _r(aro),
        }
        if t.occlusion is not None:
            out["occlusion"] = _r(np.asarray(t.occlusion, dtype=float)[rows].mean())
        if start > t.end + ev.TIME_TOLERANCE_S or end < t.start - ev.TIME_TOLERANCE_S:
            out["note"] = f"face {t.track_id} is only visible {t.start:.1f}-{t.end:.1f} s"
        return out

    def _cite(self, prefix: str, result: dict) -> dict:
        rid = self._new_id(prefix)
        result = {"id": rid, **result}
        self.results[rid] = result
        return result

    def moment(self, t: float, track_id: int | None = None) -> dict:
        tr = self._track(track_id)
        out = self._window(tr, t - MOMENT_HALF_S, t + MOMENT_HALF_S)
        return self._cite("W", {**out, "at": _r(t, 1)})

    def time_window(self, start: float, end: float, track_id: int | None = None) -> dict:
        return self._cite("W", self._window(self._track(track_id), start, end))

    def compare_moments(self, t1: float, t2: float, track_id: int | None = None) -> dict:
        t = self._track(track_id)
        a = self._window(t, t1 - MOMENT_HALF_S / 2, t1 + MOMENT_HALF_S / 2)
        b = self._window(t, t2 - MOMENT_HALF_S / 2, t2 + MOMENT_HALF_S / 2)
        aus = sorted(set(a["aus_present"]) | set(b["aus_present"]))
        au_change = {c: _r(b["aus_present"].get(c, 0.0) - a["aus_present"].get(c, 0.0)) for c in aus}
        e1 = ev.mean_emotions(self.analysis, t, ev.window(t, t1 - 0.25, t1 + 0.25))
        e2 = ev.mean_emotions(self.analysis, t, ev.window(t, t2 - 0.25, t2 + 0.25))
        emo_change = {k: _r(e2[k] - e1.get(k, 0.0)) for k in e2}
        top = sorted(emo_change.items(), key=lambda kv: -abs(kv[1]))[:3]
        return self._cite("C", {
            "track_id": t.track_id, "t1": _r(t1), "t2": _r(t2),
            "at_t1": {"aus": a["aus_present"], "emotions": a["emotions"]},
            "at_t2": {"aus": b["aus_present"], "emotions": b["emotions"]},
            "au_change": {c: v for c, v in au_change.items() if abs(v) >= 0.1},
            "emotion_change": dict(top), "valence_change": _r(b["valence"] - a["valence"]),
            "start": _r(min(t1, t2)), "end": _r(max(t1, t2))})

    def inspect_face(self, track_id: int) -> dict:
        t = self._track(track_id)
        f = ev.facts(self.analysis, t)
        pose = np.asarray(t.pose, dtype=float)
        return {
            "track_id": t.track_id, "start": _r(t.start), "end": _r(t.end), "frames": t.n,
            "segments": [{"id": i, "label": s.label, "start": _r(s.start), "end": _r(s.end),
                          "p": _r(s.mean_prob)} for i, s in f.segments.items()],
            "strongest_aus": {c: _r(v) for c, v in ev.top_aus(self.analysis, t, k=5)},
            "events": len(f.events),
            "occluded_share": _r(ev.occluded_share(t)),
            "mean_pose_deg": {"pitch": _r(pose[:, 0].mean(), 1), "yaw": _r(pose[:, 1].mean(), 1),
                              "roll": _r(pose[:, 2].mean(), 1)} if t.n else {},
            "other_faces": [x.track_id for x in self.analysis.tracks if x.track_id != t.track_id],
        }

    def clip_context(self) -> dict:
        ctx = self.context or self.analysis.context
        if ctx.status == "off" and self.source_path is not None and self.analysis.tracks:
            # Kept on the toolbox, never written into the Analysis: what one face's
            # conversation looked at must not change another face's prompt.
            ctx = self.context = self._score_context()
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
        return score_context(frames, crops, label_set=self.label_set)

    def list_events(self, track_id: int | None = None, au: str | None = None,
                    start: float | None = None, end: float | None = None) -> dict:
        t = self._track(track_id)
        f = ev.facts(self.analysis, t)
        items = list(f.events.items())
        if au:
            au = au.upper().replace(" ", "")
            items = [(i, e) for i, e in items if e.au == au]
        lo = start if start is not None else -np.inf
        hi = end if end is not None else np.inf
        items = [(i, e) for i, e in items
                 if e.end >= lo - ev.TIME_TOLERANCE_S and e.start <= hi + ev.TIME_TOLERANCE_S]
        return {"track_id": t.track_id,
                "events": [{"id": i, "au": e.au, "name": e.name, "start": _r(e.start),
                            "end": _r(e.end), "peak": _r(e.peak)} for i, e in items[:12]],
                "total": len(items)}
