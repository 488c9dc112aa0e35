"""`analyze(path) -> Analysis`: the whole perception pass, top to bottom.

1. tools.video     decode frames (streamed) with real timestamps
2. tools.landmarks MediaPipe FaceLandmarker: landmarks, blendshapes, pose per face
3. tools.tracking  stable face ids
   ... per-frame features that need pixels are taken here, while the frame is
   in memory (see `_frame_features`, run on a second thread by `_FaceWorker`) ...
4. per track, vectorised over time (see `_measure_track`): AUs, occlusion,
   emotion, timeline
5. the `Analysis`
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from tools import aus, context, emotion, emotion_cnn, labelsets, occlusion, timeline
from tools.analysis import NO_FACE, Analysis, ContextResult, Sampling, Track
from tools.facs import AU_CODES
from tools.landmarks import FaceObservation, LandmarkDetector
from tools.tracking import Tracker
from tools.video import DEFAULT_LIMITS, Limits, Media

MIN_TRACK_FRAMES = 3
CONTEXT_FRACTIONS = (0.1, 0.5, 0.9)  # where in a video the CLIP context frames are taken
ProgressFn = Callable[[str, float], None]  # (stage, fraction done in [0, 1])


def _frame_features(rgb: np.ndarray, face: FaceObservation) -> None:
    """Measurements that need this frame's pixels, stored on the observation.

    Everything else is computed per track after the pass, so only these small
    arrays (a 64x64 crop, a few colour statistics) outlive the frame.
    """
    face.features["occlusion"] = occlusion.frame_features(rgb, face.landmarks)
    face.features["crop"] = emotion_cnn.align_crop(rgb, face.landmarks)


class _FaceWorker:
    """Runs `_frame_features` and the emotion CNN (in batches) on a second thread.

    MediaPipe keeps about one core busy, so on two cores the per-face pixel
    work and the CNN hide behind the landmarker of the next frames instead of
    adding to it. Each face gets features "occlusion", "crop" and "cnn".
    """

    def __init__(self, batch: int = 64, depth: int = 16):
        self.batch = batch
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._pending: list[FaceObservation] = []
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="faces", daemon=True)
        self._thread.start()

    def submit(self, rgb: np.ndarray, faces: list[FaceObservation]) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((rgb, faces))

    def finish(self) -> None:
        """Wait for every submitted face; re-raises the worker's error, if any."""
        self._q.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            if self._error is not None:
                continue  # keep draining so submit() never blocks on a dead worker
            try:
                rgb, faces = item
                for face in faces:
                    _frame_features(rgb, face)
                    self._pending.append(face)
                if len(self._pending) >= self.batch:
                    self._flush()
            except BaseException as exc:  # handed to the pipeline thread
                self._error = exc
        if self._error is None:
            try:
                self._flush()
            except BaseException as exc:
                self._error = exc

    def _flush(self) -> None:
        if not self._pending:
            return
        probs = emotion_cnn.get_cnn().predict(np.stack([f.features["crop"] for f in self._pending]))
        for face, p in zip(self._pending, probs, strict=True):
            face.features["cnn"] = p
        self._pending = []


@contextlib.contextmanager
def _cnn_threads(n: int):
    """Run OpenCV (the emotion CNN in `_FaceWorker`, cv2.dnn) on n threads for a while.

    MediaPipe keeps one core busy during the pass; a CNN with one thread per core
    then fights it for the same core (measured with the earlier torch runtime: 4.8 s
    with 1 thread vs 5.3 s with 2 for the 472-frame sample video on 2 cores).
    """
    before = cv2.getNumThreads()
    cv2.setNumThreads(min(n, max(1, before)))
    try:
        yield
    finally:
        cv2.setNumThreads(before)


def _measure_track(track: Track, features: dict[str, np.ndarray],
                   label_set: labelsets.LabelSet) -> None:
    """Expression measurement over one whole track: this is where a face's
    frames become AU vectors (tools.aus), emotion probabilities (tools.emotion)
    and segments/events (tools.timeline)."""
    lm = features["landmarks"]
    track.occlusion, track.au_reliable = occlusion.score(
        features["occlusion"], track.blendshapes, lm, track.timestamps)
    au = aus.estimate(lm, track.blendshapes, track.pose, track.timestamps, track.au_reliable,
                      track.occlusion)
    track.aus, track.au_occurrence = au.intensity, au.occurrence
    emo = emotion.fuse(features["cnn"], au.intensity, AU_CODES, label_set)
    track.emotions, track.valence, track.arousal = emo.probs, emo.valence, emo.arousal
    track.segments, track.events, track.summary = timeline.build_timeline(
        track, emo.labels, AU_CODES)


def analyze(
    path: str | os.PathLike,
    *,
    fps: float | None = None,
    max_faces: int = 8,
    limits: Limits = DEFAULT_LIMITS,
    include_landmarks: bool = True,
    label_set: str | os.PathLike | labelsets.LabelSet | None = None,
    scene_context: bool | None = None,
    display_name: str | None = None,
    progress: bool | ProgressFn | None = None,
) -> Analysis:
    """Analyse every face in a video or image.

    fps: analyse at most this many frames per second (None: every frame).
    max_faces: the most faces looked for in one frame.
    label_set: the emotion vocabulary: None for the 8 basic classes, a name from
      prompts/labelsets/ (e.g. "academic"), a YAML path, or a LabelSet.
    scene_context: score a few frames with CLIP (tools.context). None (default):
      only when CLIP weights are found locally; True: also try the hub. Without
      weights the result records "context: unavailable (...)" and goes on.
    progress: True for a progress bar on stderr (shown for videos over ~5 s
      when stderr is a terminal if left as None), or a callback (stage, fraction).
    """
    if fps is not None and not fps > 0:
        from tools.errors import FaceReasonError

        raise FaceReasonError(f"fps must be a positive number, got {fps}.", code="bad_option",
                              http_status=422)
    if not 1 <= int(max_faces) <= 16:
        from tools.errors import FaceReasonError

        raise FaceReasonError(f"max_faces must be between 1 and 16, got {max_faces}.",
                              code="bad_option", http_status=422)
    if scene_context is None:
        scene_context = context.weights_found_locally()
        skipped = ContextResult(status="unavailable", message=(
            "context: unavailable (no CLIP weights found locally; set "
            f"{context.CHECKPOINT_ENV} to a checkpoint, or ask for context explicitly to "
            "let open_clip download its default)"))
    else:
        skipped = ContextResult(status="off", message="context: not requested")
    labels = label_set if isinstance(label_set, labelsets.LabelSet) else \
        labelsets.load_label_set(label_set)
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    warnings: list[str] = []
    per_track: dict[int, list[tuple[int, float, FaceObservation]]] = defaultdict(list)
    times: list[float] = []
    frames_decoded = 0

    with Media(path, limits, display_name=display_name) as media:
        info = media.info
        is_video = info.kind == "video"
        bar, callback = _progress(progress, info, fps)
        tracker = Tracker()
        t_lm = 0.0
        # A few evenly spaced frames (and their faces) are kept for CLIP context.
        keep_times = ([0.0] if not is_video else
                      [f * (info.duration_s or 0.0) for f in CONTEXT_FRACTIONS]) if scene_context else []
        scene_frames: list[np.ndarray] = []
        face_crops: list[np.ndarray] = []
        # closing(): the decode thread must stop before the container closes, even on error.
        worker = _FaceWorker()
        with (LandmarkDetector(max_faces=max_faces, video=is_video) as detector,
              _cnn_threads(1),
              contextlib.closing(_prefetch(media.frames(fps=fps))) as frames):
            for frame in frames:
                frames_decoded = frame.index + 1
                times.append(frame.time)
                t0 = time.perf_counter()
                faces = (detector.detect(frame.rgb, frame.time) if is_video
                         else detector.detect_still(frame.rgb))
                t_lm += time.perf_counter() - t0
                if faces:
                    ids = tracker.update(np.stack([f.bbox for f in faces]), frame.time)
                    worker.submit(frame.rgb, faces)
                    for face, tid in zip(faces, ids, strict=True):
                        per_track[tid].append((frame.index, frame.time, face))
                else:
                    tracker.update(np.zeros((0, 4)), frame.time)
                if keep_times and frame.time >= keep_times[0]:
                    keep_times.pop(0)
                    scene_frames.append(frame.rgb)
                    face_crops.extend(_face_crop(frame.rgb, f.bbox) for f in faces)
                if bar is not None:
                    bar.update(1)
                if callback is not None and info.duration_s:
                    callback("perception", min(frame.time / info.duration_s, 1.0))
        worker.finish()
        if bar is not None:
            bar.close()
        if media.truncated_at is not None:
            warnings.append(f"The video is damaged: decoding stopped after frame "
                            f"{media.truncated_at}; the analysis covers the frames before it.")
        elif is_video and info.n_frames and frames_decoded < 0.95 * info.n_frames - 1:
            warnings.append(f"The video ends early: the container announces {info.n_frames} "
                            f"frames but only {frames_decoded} could be decoded (the file is "
                            "probably truncated); the analysis covers those.")
    timings["landmarks_s"] = round(t_lm, 4)

    if is_video and info.duration_s is None and times:
        info.duration_s = float(times[-1])
    t0 = time.perf_counter()
    # A face seen in fewer than 3 frames of a video is almost always a false
    # detection (text, a pattern) rather than a person: SORT's "min hits" rule.
    min_obs = min(MIN_TRACK_FRAMES, len(times)) if is_video else 1
    brief = [tid for tid, rows in per_track.items() if len(rows) < min_obs]
    if brief:
        warnings.append(f"Ignored {len(brief)} brief detection(s) seen in fewer than {min_obs} "
                        "frames (likely false positives).")
    kept = sorted((tid, rows) for tid, rows in per_track.items() if len(rows) >= min_obs)
    # Ids are renumbered 1..n in order of first appearance, so they read naturally.
    tracks = [_build_track(i, rows, include_landmarks, labels)
              for i, (_, rows) in enumerate(kept, 1)]
    timings["measure_s"] = round(time.perf_counter() - t0, 4)
    if not tracks:
        warnings.append(NO_FACE)
    t0 = time.perf_counter()
    if scene_context:
        ctx = context.score_context(scene_frames, face_crops,
                                    label_set=None if labels.is_default else list(labels.labels))
    else:
        ctx = skipped
    timings["context_s"] = round(time.perf_counter() - t0, 4)
    timings["total_s"] = round(time.perf_counter() - t_start, 4)
    return Analysis(
        source=info,
        sampling=Sampling(target_fps=fps, frames_decoded=frames_decoded,
                          frames_analysed=len(times), timestamps=np.asarray(times, np.float32)),
        tracks=tracks, timings=timings, warnings=warnings,
        au_codes=list(AU_CODES), emotion_labels=list(labels.labels), context=ctx,
    )


def _face_crop(rgb: np.ndarray, bbox: np.ndarray, margin: float = 0.2) -> np.ndarray:
    """The face box with a margin, as CLIP sees a face (colour, not aligned)."""
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = bbox
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return rgb[int(max(y0 - my, 0)):int(min(y1 + my, h)), int(max(x0 - mx, 0)):int(min(x1 + mx, w))]


def _prefetch(frames: Iterator, depth: int = 4) -> Iterator:
    """Decode ahead in a thread while the landmarker works on the current frame.

    FFmpeg and MediaPipe both release the GIL, so on two cores decoding hides
    behind inference instead of adding to it. Errors are re-raised in order.
    """
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in frames:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as exc:  # handed to the consumer, raised there
            q.put(exc)

    thread = threading.Thread(target=work, name="decode", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def _build_track(tid: int, rows: list[tuple[int, float, FaceObservation]],
                 include_landmarks: bool, label_set: labelsets.LabelSet) -> Track:
    faces = [r[2] for r in rows]
    landmarks = np.stack([f.landmarks for f in faces])
    track = Track(
        track_id=tid,
        frame_index=np.array([r[0] for r in rows], np.int64),
        timestamps=np.array([r[1] for r in rows], np.float32),
        bbox=np.stack([f.bbox for f in faces]),
        confidence=np.array([f.quality for f in faces], np.float32),
        pose=np.stack([f.pose for f in faces]),
        blendshapes=np.stack([f.blendshapes for f in faces]),
        landmarks=landmarks if include_landmarks else None,
    )
    keys = set().union(*(f.features for f in faces))
    features = {k: np.stack([f.features[k] for f in faces]) for k in keys}
    features["landmarks"] = landmarks
    _measure_track(track, features, label_set)
    return track


def _progress(progress, info, fps):
    """A tqdm bar and/or a callback, depending on what the caller asked for."""
    callback = progress if callable(progress) else None
    show = progress is True or (
        progress is None and info.kind == "video" and (info.duration_s or 0) > 5
        and sys.stderr.isatty())
    if not show:
        return None, callback
    from tqdm import tqdm

    total = None
    if info.duration_s and (fps or info.native_fps):
        total = int(info.duration_s * min(fps or 1e9, info.native_fps or 1e9)) or None
    return tqdm(total=total, unit="frame", desc=Path(info.name).name, leave=False), callback
