"""Face landmarks with MediaPipe FaceLandmarker: 478 points, 52 blendshapes and
the 4x4 face transform for every face in a frame.

VIDEO running mode is used for videos (MediaPipe then tracks faces between
frames, which is faster and steadier than detecting each frame), IMAGE mode
for stills. Identity across frames is *not* MediaPipe's job here: the order of
faces in its output may change, so tools.tracking assigns stable ids.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from tools import assets

os.environ.setdefault("GLOG_minloglevel", "2")  # silence MediaPipe's C++ INFO/WARNING lines

import mediapipe as mp  # noqa: E402
from mediapipe.tasks.python import BaseOptions, vision  # noqa: E402

N_LANDMARKS = 478


@dataclass
class FaceObservation:
    """One face in one frame. Landmarks are in pixels: x, y, and z at x's scale."""

    bbox: np.ndarray  # (4,) x0, y0, x1, y1
    landmarks: np.ndarray  # (478, 3)
    blendshapes: np.ndarray  # (52,) in tools.facs.BLENDSHAPE_NAMES order
    transform: np.ndarray  # (4, 4) canonical face model -> camera
    pose: np.ndarray  # (3,) pitch, yaw, roll in degrees
    quality: float  # [0, 1], see landmark_quality
    # Per-frame measurements that need the pixels (e.g. the emotion crop), added
    # by the pipeline while the frame is still in memory.
    features: dict[str, np.ndarray] = field(default_factory=dict)


def pose_from_transform(m: np.ndarray) -> np.ndarray:
    """Pitch (x), yaw (y), roll (z) in degrees from MediaPipe's face transform.

    The rotation part maps the canonical face into camera space (x right, y up,
    z towards the camera). Extrinsic x-y-z Euler angles, R = Rz(roll) Ry(yaw)
    Rx(pitch), as scipy's `Rotation.as_euler("xyz")` returns them (a test checks
    the two agree; the closed form here costs microseconds instead of scipy's
    per-call overhead, once per face per frame). Positive pitch = chin up,
    positive yaw = face turned to the image's left, positive roll = head tilted
    counter-clockwise in the image.
    """
    r = np.asarray(m, np.float64)[:3, :3]
    pitch = np.arctan2(r[2, 1], r[2, 2])
    yaw = np.arcsin(np.clip(-r[2, 0], -1.0, 1.0))
    roll = np.arctan2(r[1, 0], r[0, 0])
    return np.degrees([pitch, yaw, roll])


def landmark_quality(lm: np.ndarray, width: int, height: int, pose: np.ndarray) -> float:
    """A [0, 1] score of how much to trust this face's landmarks.

    MediaPipe's Tasks API reports no per-face confidence, so we combine three
    things that make landmarks unreliable: points outside the frame (a cut-off
    face), a small face (under ~80 px tall the mesh is mostly guessed), and
    extreme head rotation (the far side of the face is hidden).
    """
    inside = np.mean((lm[:, 0] >= 0) & (lm[:, 0] < width) & (lm[:, 1] >= 0) & (lm[:, 1] < height))
    face_h = float(lm[:, 1].max() - lm[:, 1].min())
    size = np.clip((face_h - 20.0) / 60.0, 0.0, 1.0)
    yaw, pitch = np.radians(pose[1]), np.radians(pose[0])
    angle = np.clip(np.cos(yaw) * np.cos(pitch), 0.0, 1.0) ** 2
    return float(inside * size * angle)


def _shift(f: FaceObservation, dx: float, dy: float, w: int, h: int) -> FaceObservation:
    """Move a face found in a tile back into whole-image pixel coordinates."""
    lm = f.landmarks + np.array([dx, dy, 0], np.float32)
    x0, y0 = np.clip(lm[:, :2].min(0), 0, [w, h])
    x1, y1 = np.clip(lm[:, :2].max(0), 0, [w, h])
    # f.quality was scored inside the tile, so a face the tile cuts keeps its low score.
    return FaceObservation(bbox=np.array([x0, y0, x1, y1], np.float32), landmarks=lm,
                           blendshapes=f.blendshapes, transform=f.transform, pose=f.pose,
                           quality=min(f.quality, landmark_quality(lm, w, h, f.pose)))


def _merge_duplicates(faces: list[FaceObservation], iou: float = 0.3,
                      keep_order: bool = False) -> list[FaceObservation]:
    """Drop faces overlapping an earlier kept one; best quality first unless keep_order."""
    from tools.tracking import iou_matrix

    if not keep_order:
        faces = sorted(faces, key=lambda f: -f.quality)
    kept: list[FaceObservation] = []
    for f in faces:
        if not kept or iou_matrix(f.bbox[None], np.stack([k.bbox for k in kept])).max() < iou:
            kept.append(f)
    return kept


@contextlib.contextmanager
def _quiet_native_stderr():
    """MediaPipe's C++ side logs INFO/WARNING lines to fd 2 while it builds its
    graph and runs the first frame (absl ignores GLOG_minloglevel there). They
    mean nothing to a user, so fd 2 is pointed at /dev/null for those calls."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class LandmarkDetector:
    """Wraps one MediaPipe FaceLandmarker. Not thread-safe: one per stream."""

    def __init__(self, max_faces: int = 8, video: bool = True, min_confidence: float = 0.5):
        self.video = video
        self.max_faces = max_faces
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(assets.path("face-landmarker"))),
            running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
            num_faces=max_faces,
            min_face_detection_confidence=min_confidence,
            min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        with _quiet_native_stderr():
            self._lm = vision.FaceLandmarker.create_from_options(opts)
        self._last_ms = -1
        self._warm = False

    def detect(self, rgb: np.ndarray, time_s: float = 0.0) -> list[FaceObservation]:
        h, w = rgb.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if not self._warm:
            self._warm = True
            with _quiet_native_stderr():
                return self.detect(rgb, time_s)
        if self.video:
            # MediaPipe needs strictly increasing integer milliseconds.
            ms = max(int(round(time_s * 1000)), self._last_ms + 1)
            self._last_ms = ms
            res = self._lm.detect_for_video(image, ms)
        else:
            res = self._lm.detect(image)
        out = []
        scale = np.array([w, h, w], np.float32)
        for i, pts in enumerate(res.face_landmarks):
            lm = np.array([(p.x, p.y, p.z) for p in pts], np.float32) * scale
            bs = np.array([c.score for c in res.face_blendshapes[i]], np.float32)
            m = np.asarray(res.facial_transformation_matrixes[i], np.float32)
            pose = pose_from_transform(m).astype(np.float32)
            x0, y0 = np.clip(lm[:, :2].min(0), 0, [w, h])
            x1, y1 = np.clip(lm[:, :2].max(0), 0, [w, h])
            out.append(FaceObservation(
                bbox=np.array([x0, y0, x1, y1], np.float32), landmarks=lm, blendshapes=bs,
                transform=m, pose=pose, quality=landmark_quality(lm, w, h, pose)))
        return out

    def detect_still(self, rgb: np.ndarray) -> list[FaceObservation]:
        """IMAGE mode on the whole picture and on overlapping tiles, merged.

        The FaceLandmarker's detector (BlazeFace short-range) sees a 128 px
        downscale of its input, so small faces in group photos are missed on
        the whole picture. Running it again on a 2x2 grid of tiles (each 60%
        of the side, so neighbours overlap by 20%) finds them; duplicates are
        merged by box overlap, keeping the better-quality face.
        """
        whole = self.detect(rgb)
        h, w = rgb.shape[:2]
        th, tw = int(h * 0.6), int(w * 0.6)
        tiles: list[FaceObservation] = []
        if min(th, tw) >= 64:
            for y0 in (0, h - th):
                for x0 in (0, w - tw):
                    for f in self.detect(rgb[y0:y0 + th, x0:x0 + tw]):
                        tiles.append(_shift(f, x0, y0, w, h))
        # A face the whole-picture pass found wins over its tile copies (a tile may
        # cut it); tile faces fill in only where the whole pass found nothing.
        faces = _merge_duplicates(whole) + sorted(tiles, key=lambda f: -f.quality)
        return _merge_duplicates(faces, keep_order=True)[: self.max_faces]

    def close(self) -> None:
        if self._lm is not None:
            self._lm.close()
            self._lm = None

    def __enter__(self) -> LandmarkDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # MediaPipe's own __del__ fails at interpreter exit
        try:
            self.close()
        except Exception:
            pass
