"""Test-only helper: run MediaPipe FaceLandmarker on the bundled media and return
what the perception pipeline hands to tools.aus / tools.occlusion.

This is deliberately not a second pipeline: it exists so the AU and occlusion
tests run on real landmarks before (and independently of) tools.pipeline. One
face per file (the AU test media hold one person each).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache

import av
import numpy as np
from PIL import Image
from scipy.spatial.transform import Rotation

from tools import assets, occlusion

os.environ.setdefault("GLOG_minloglevel", "2")

import mediapipe as mp  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402


@dataclass
class FaceSeries:
    landmarks: np.ndarray  # (n, 478, 3) pixels
    blendshapes: np.ndarray  # (n, 52)
    pose: np.ndarray  # (n, 3) pitch, yaw, roll degrees
    timestamps: np.ndarray  # (n,)
    features: np.ndarray  # (n, F) tools.occlusion.frame_features
    frame_index: np.ndarray  # (n,) decoded-frame numbers that had a face


def _landmarker(video: bool):
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(assets.path("face-landmarker"))),
        running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
        num_faces=1,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    return vision.FaceLandmarker.create_from_options(opts)


def _one(res, w: int, h: int):
    if not res.face_landmarks:
        return None
    lm = np.array([(p.x, p.y, p.z) for p in res.face_landmarks[0]], np.float32)
    lm *= np.array([w, h, w], np.float32)
    bs = np.array([c.score for c in res.face_blendshapes[0]], np.float32)
    m = np.asarray(res.facial_transformation_matrixes[0], np.float64)
    pose = Rotation.from_matrix(m[:3, :3]).as_euler("xyz", degrees=True).astype(np.float32)
    return lm, bs, pose


def _stack(rows: list, ts: list, feats: list, idx: list) -> FaceSeries:
    return FaceSeries(
        landmarks=np.stack([r[0] for r in rows]), blendshapes=np.stack([r[1] for r in rows]),
        pose=np.stack([r[2] for r in rows]), timestamps=np.asarray(ts, np.float32),
        features=np.stack(feats), frame_index=np.asarray(idx))


def video_faces(name: str, keep_frames: tuple[int, ...] = ()) -> tuple[FaceSeries, dict]:
    """Every decoded frame of a bundled video; returns the series and the kept RGB frames."""
    kept: dict[int, np.ndarray] = {}
    rows, ts, feats, idx = [], [], [], []
    with av.open(str(assets.media(name))) as c, _landmarker(True) as lmk:
        stream = c.streams.video[0]
        for i, frame in enumerate(c.decode(stream)):
            rgb = frame.to_ndarray(format="rgb24")
            t = float(frame.pts * stream.time_base)
            if i in keep_frames:
                kept[i] = rgb
            img = mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)
            got = _one(lmk.detect_for_video(img, int(round(t * 1000))), rgb.shape[1], rgb.shape[0])
            if got is None:
                continue
            rows.append(got)
            ts.append(t)
            idx.append(i)
            feats.append(occlusion.frame_features(rgb, got[0]))
    return _stack(rows, ts, feats, idx), kept


def image_face(name: str) -> FaceSeries:
    """One still (IMAGE mode) as a one-frame series."""
    rgb = np.asarray(Image.open(assets.media(name)).convert("RGB"))
    with _landmarker(False) as lmk:
        got = _one(lmk.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb)),
                   rgb.shape[1], rgb.shape[0])
    if got is None:
        raise AssertionError(f"no face found in {name}")
    return _stack([got], [0.0], [occlusion.frame_features(rgb, got[0])], [0])


@cache
def media_faces(name: str) -> FaceSeries:
    """Cached per test session: a video's whole series, or a still's one frame."""
    if name.endswith((".mp4", ".mov")):
        return video_faces(name)[0]
    return image_face(name)
