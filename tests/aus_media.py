"""Test-only helper: the per-face series that tools.pipeline hands to tools.aus
and tools.occlusion, for one bundled media file (one person each), built from
the project's own decoder and landmarker so the AU tests see exactly the
pipeline's inputs without running emotion and timeline on top."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from tools import assets, occlusion
from tools.landmarks import LandmarkDetector
from tools.video import Media

# My own per-second AU notes and photo expectations (see docs/aus.md).
LABELS = json.loads((Path(__file__).parent / "data" / "aus_labels.json").read_text())
SMALL = ["single_face.mp4", *LABELS["photos"]]  # the quick media: one short clip, the photos


@dataclass
class FaceSeries:
    landmarks: np.ndarray  # (n, 478, 3) pixels
    blendshapes: np.ndarray  # (n, 52)
    pose: np.ndarray  # (n, 3) pitch, yaw, roll degrees
    timestamps: np.ndarray  # (n,)
    features: np.ndarray  # (n, F) tools.occlusion.frame_features
    frame_index: np.ndarray  # (n,) decoded-frame numbers that had a face


@cache
def media_faces(name: str) -> FaceSeries:
    """Cached per test session: the first face of every frame of a video, or of a still."""
    rows, ts, feats, idx = [], [], [], []
    with Media(assets.media(name)) as m:
        video = m.info.kind == "video"
        with LandmarkDetector(max_faces=1, video=video) as det:
            for fr in m.frames():
                faces = det.detect(fr.rgb, fr.time) if video else det.detect_still(fr.rgb)
                if not faces:
                    continue
                rows.append(faces[0])
                ts.append(fr.time)
                idx.append(fr.index)
                feats.append(occlusion.frame_features(fr.rgb, faces[0].landmarks))
    if not rows:
        raise AssertionError(f"no face found in {name}")
    return FaceSeries(
        landmarks=np.stack([f.landmarks for f in rows]),
        blendshapes=np.stack([f.blendshapes for f in rows]),
        pose=np.stack([f.pose for f in rows]), timestamps=np.asarray(ts, np.float32),
        features=np.stack(feats), frame_index=np.asarray(idx))


def small_faces() -> dict[str, FaceSeries]:
    return {name: media_faces(name) for name in SMALL}
