"""The `Analysis` type: the one result that perception produces and every other
part of FaceReason (agent, training, evals, API) reads.

Per-track time series are stored column-wise as numpy arrays (fast to compute
on, serialised to JSON as nested lists). Column names live next to the data
(`blendshape_names`, `au_codes`, `emotion_labels`) so a user-defined label set
travels with the result.

Units: timestamps in seconds from the start of the media; boxes in pixels
(x0, y0, x1, y1); pose in degrees (pitch, yaw, roll); AU intensity on the
FACS 0-5 scale; probabilities in [0, 1]; valence/arousal in [-1, 1].
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, WithJsonSchema

from tools.facs import AU_NAMES, BLENDSHAPE_NAMES, EMOTIONS

NO_FACE = "No face found."  # the warning (and summary) of an analysis without a face


def _to_array(v: Any) -> np.ndarray:
    a = np.asarray(v)
    if a.dtype == object:
        raise ValueError("array fields must be rectangular numbers")
    return a.astype(np.float32, copy=False) if a.dtype.kind == "f" or a.size == 0 else a


def _to_list(a: np.ndarray) -> list:
    if a.dtype.kind == "f":
        return np.round(a.astype(np.float64), 5).tolist()
    return a.tolist()


Array = Annotated[
    np.ndarray,
    PlainValidator(_to_array),
    PlainSerializer(_to_list, return_type=list),
    WithJsonSchema({"type": "array", "items": {}}),
]


class _Model(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


class SourceInfo(_Model):
    name: str = Field(description="file name only; never a server path")
    kind: Literal["video", "image"]
    width: int
    height: int
    duration_s: float | None = None
    native_fps: float | None = None
    n_frames: int | None = Field(None, description="frames in the container, if it says")
    codec: str | None = None
    size_bytes: int = 0
    sha256: str = ""


class Sampling(_Model):
    target_fps: float | None = Field(None, description="None: every frame was analysed")
    frames_decoded: int = 0
    frames_analysed: int = 0
    timestamps: Array = Field(default_factory=lambda: np.zeros(0, np.float32))


class EmotionSegment(_Model):
    label: str
    start: float
    end: float
    peak_time: float
    mean_prob: float
    peak_prob: float
    micro: bool = Field(False, description="shorter than 0.5 s: a possible micro-expression")


class AUEvent(_Model):
    au: str
    name: str
    onset: float
    apex: float
    offset: float
    peak_intensity: float
    micro: bool = False


class TrackSummary(_Model):
    dominant_emotion: str
    dominant_share: float
    strongest_aus: list[tuple[str, float]] = Field(default_factory=list)
    mean_valence: float = 0.0
    mean_arousal: float = 0.0
    occluded_share: float = 0.0


class ContextResult(_Model):
    status: Literal["ok", "unavailable", "off"] = "off"
    message: str = ""
    model: str | None = None
    scene: dict[str, float] = Field(default_factory=dict)
    face: dict[str, float] = Field(default_factory=dict)


class Track(_Model):
    track_id: int
    frame_index: Array = Field(description="decoded-frame numbers (0-based) of each row")
    timestamps: Array
    bbox: Array = Field(description="(n, 4) x0, y0, x1, y1 in pixels")
    confidence: Array = Field(description="(n,) landmark quality in [0, 1]")
    pose: Array = Field(description="(n, 3) pitch, yaw, roll in degrees")
    blendshapes: Array = Field(description="(n, 52) scores, columns = Analysis.blendshape_names")
    landmarks: Array | None = Field(
        None, description="(n, 478, 3) x, y in pixels, z at x's scale; omitted unless asked"
    )
    # Filled by expression measurement (tools.aus, tools.emotion, tools.timeline).
    aus: Array | None = Field(None, description="(n, K) intensity 0-5, columns = au_codes")
    au_occurrence: Array | None = Field(None, description="(n, K) 0/1")
    au_reliable: Array | None = Field(None, description="(n, K) 0 where the region is occluded")
    emotions: Array | None = Field(None, description="(n, C) probabilities, columns = emotion_labels")
    valence: Array | None = None
    arousal: Array | None = None
    occlusion: Array | None = Field(None, description="(n,) occlusion score in [0, 1]")
    segments: list[EmotionSegment] = Field(default_factory=list)
    events: list[AUEvent] = Field(default_factory=list)
    summary: TrackSummary | None = None

    @property
    def n(self) -> int:
        return int(len(self.timestamps))

    @property
    def start(self) -> float:
        return float(self.timestamps[0]) if self.n else 0.0

    @property
    def end(self) -> float:
        return float(self.timestamps[-1]) if self.n else 0.0


class Analysis(_Model):
    version: str = "1"
    source: SourceInfo
    sampling: Sampling
    tracks: list[Track] = Field(default_factory=list)
    blendshape_names: list[str] = Field(default_factory=lambda: list(BLENDSHAPE_NAMES))
    au_codes: list[str] = Field(default_factory=lambda: list(AU_NAMES))
    emotion_labels: list[str] = Field(default_factory=lambda: list(EMOTIONS))
    context: ContextResult = Field(default_factory=ContextResult)
    timings: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)

    @property
    def no_face(self) -> bool:
        return not self.tracks

    def track(self, track_id: int) -> Track:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise KeyError(f"no face track {track_id}; tracks: {[t.track_id for t in self.tracks]}")

    # ---------------------------------------------------------------- export
    def to_json(self, include_landmarks: bool = False, indent: int | None = None) -> str:
        exclude = None if include_landmarks else {"tracks": {"__all__": {"landmarks"}}}
        return self.model_dump_json(exclude=exclude, indent=indent)

    @classmethod
    def from_json(cls, text: str | bytes) -> Analysis:
        return cls.model_validate_json(text)

    def csv_columns(self, include_landmarks: bool = True) -> list[str]:
        return [c for g in csv_groups(self, include_landmarks) for c in g.columns(self)]

    def csv_rows(self, include_landmarks: bool = True):
        """One row per (frame, face), sorted by frame then face_id (OpenFace/py-feat style),
        built group by group from CSV_GROUPS (pose in radians, as OpenFace writes it)."""
        groups = [(g, g.columns(self)) for g in csv_groups(self, include_landmarks)]
        rows = []
        for t in self.tracks:
            for i in range(t.n):
                rows.append([v for g, cols in groups for v in g.row(self, t, i, cols)])
        rows.sort(key=lambda r: (r[0], r[2]))
        return [c for _, cols in groups for c in cols], rows

    def to_csv(self, path: str | Path | None = None, include_landmarks: bool = True) -> str:
        cols, rows = self.csv_rows(include_landmarks)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(cols)
        w.writerows(rows)
        text = buf.getvalue()
        if path is not None:
            Path(path).write_text(text)
        return text


# ------------------------------------------------------------------ CSV layout
@dataclass(frozen=True)
class ColumnGroup:
    """One block of CSV columns: its names for an Analysis (none: the block is absent) and
    its values for one frame of one track, blank where the track lacks the series. The
    blocks, in order, are the CSV layout (as py-feat's Fex declares its column groups);
    `read_csv` splits a file back into them by `owns`."""

    name: str
    columns: Callable[[Analysis], list[str]]
    values: Callable[[Analysis, Track, int, list[str]], list[Any] | None]  # None: blanks
    owns: Callable[[str], bool]

    def row(self, a: Analysis, t: Track, i: int, cols: list[str]) -> list[Any]:
        v = self.values(a, t, i, cols)
        return [""] * len(cols) if v is None else v


def _round(x: np.ndarray, nd: int) -> list:
    return np.round(x, nd).tolist()


def _lm_columns(a: Analysis) -> list[str]:
    n = next((t.landmarks.shape[1] for t in a.tracks if t.landmarks is not None), 0)
    return [f"x_{k}" for k in range(n)] + [f"y_{k}" for k in range(n)]


def _box(t: Track, i: int) -> list[float]:
    x0, y0, x1, y1 = (float(v) for v in t.bbox[i])
    return [round(x0, 1), round(y0, 1), round(x1 - x0, 1), round(y1 - y0, 1)]


_FRAME = ["frame", "timestamp", "face_id", "confidence"]
_BOX = ["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight"]
_POSE = ["pose_Rx", "pose_Ry", "pose_Rz"]  # OpenFace: pitch, yaw, roll in radians
_AFFECT = ["valence", "arousal", "occlusion"]


def _has(attr: str) -> Callable[[Analysis], bool]:
    return lambda a: any(getattr(t, attr) is not None for t in a.tracks)


CSV_GROUPS: tuple[ColumnGroup, ...] = (
    ColumnGroup("frame", lambda a: list(_FRAME),
                lambda a, t, i, c: [int(t.frame_index[i]), round(float(t.timestamps[i]), 4), t.track_id,
                                    round(float(t.confidence[i]), 4)],
                lambda c: c in _FRAME),
    ColumnGroup("face_box", lambda a: list(_BOX), lambda a, t, i, c: _box(t, i), lambda c: c in _BOX),
    ColumnGroup("pose", lambda a: list(_POSE),
                lambda a, t, i, c: [round(math.radians(float(v)), 5) for v in t.pose[i]],
                lambda c: c in _POSE),
    ColumnGroup("landmarks", _lm_columns,
                lambda a, t, i, c: None if t.landmarks is None else
                _round(t.landmarks[i, :, 0], 2) + _round(t.landmarks[i, :, 1], 2),
                lambda c: c[:2] in ("x_", "y_") and c[2:].isdigit()),
    ColumnGroup("blendshapes", lambda a: list(a.blendshape_names),
                lambda a, t, i, c: _round(t.blendshapes[i], 5), lambda c: c in BLENDSHAPE_NAMES),
    ColumnGroup("au_intensity", lambda a: [f"{k}_r" for k in a.au_codes] if _has("aus")(a) else [],
                lambda a, t, i, c: None if t.aus is None else _round(t.aus[i], 4),
                lambda c: c.startswith("AU") and c.endswith("_r")),
    ColumnGroup("au_occurrence", lambda a: [f"{k}_c" for k in a.au_codes] if _has("aus")(a) else [],
                lambda a, t, i, c: None if t.au_occurrence is None else t.au_occurrence[i].astype(int).tolist(),
                lambda c: c.startswith("AU") and c.endswith("_c")),
    ColumnGroup("emotions", lambda a: list(a.emotion_labels) if _has("emotions")(a) else [],
                lambda a, t, i, c: None if t.emotions is None else _round(t.emotions[i], 5),
                lambda c: False),  # a label set's own names: whatever no other group owns
    ColumnGroup("affect", lambda a: [x for x in _AFFECT if _has(x)(a)],
                lambda a, t, i, c: [round(float(getattr(t, x)[i]), 5) if getattr(t, x) is not None else ""
                                    for x in c],
                lambda c: c in _AFFECT),
)


def csv_groups(a: Analysis, include_landmarks: bool = True) -> list[ColumnGroup]:
    """The CSV's column groups for this analysis, in order."""
    return [g for g in CSV_GROUPS if include_landmarks or g.name != "landmarks"]


def read_csv(source: str | Path) -> dict[str, tuple[list[str], np.ndarray]]:
    """A CSV written by `Analysis.to_csv` (a path, or its text when it has a newline),
    split into its column groups: name -> (column names, float array with NaN for blanks)."""
    text = source if isinstance(source, str) and "\n" in source else Path(source).read_text()
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    data = np.array([[float(v) if v != "" else np.nan for v in r] for r in reader], dtype=float)
    data = data.reshape(-1, len(header))
    taken: dict[str, list[int]] = {}
    for k, c in enumerate(header):
        owner = next((g.name for g in CSV_GROUPS if g.owns(c)), "emotions")
        taken.setdefault(owner, []).append(k)
    return {g.name: ([header[k] for k in taken[g.name]], data[:, taken[g.name]])
            for g in CSV_GROUPS if g.name in taken}
