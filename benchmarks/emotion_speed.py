"""Speed of tools.emotion's per-frame parts: align_crop, EmotionCNN.predict, fuse.

Reports CPU time per call (time.process_time, one OpenCV thread, as the pipeline runs it), which is what
the 2-core budget is spent on; wall time on a shared machine mostly measures the
neighbours. Usage: python benchmarks/emotion_speed.py
"""

from __future__ import annotations

import statistics
import time

import av
import cv2
import numpy as np

from tools import assets
from tools.emotion import fuse
from tools.emotion_cnn import align_crop, get_cnn
from tools.facs import AU_CODES
from tools.landmarks import LandmarkDetector


def cpu_ms(fn, reps: int) -> float:
    runs = []
    for _ in range(5):
        t = time.process_time()
        for _ in range(reps):
            fn()
        runs.append((time.process_time() - t) / reps * 1000)
    return statistics.median(runs)


def main() -> None:
    cv2.setNumThreads(1)
    with av.open(str(assets.media("single_face.mp4"))) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    with LandmarkDetector(max_faces=1, video=False) as det:
        face = det.detect(frame)[0]
    print(f"align_crop on {frame.shape[1]}x{frame.shape[0]}: "
          f"{cpu_ms(lambda: align_crop(frame, face.landmarks), 500):.3f} ms/call")
    cnn = get_cnn()
    crops = np.random.default_rng(0).integers(0, 256, (256, 64, 64), dtype=np.uint8)
    for bs in (1, 8, 32, 128):
        ms = cpu_ms(lambda bs=bs: cnn.predict(crops[:bs]), max(1, 64 // bs))
        print(f"EmotionCNN.predict batch {bs:4d}: {ms / bs:.2f} ms/crop")
    au = np.random.default_rng(1).uniform(0, 3, (1000, len(AU_CODES)))
    probs = np.random.default_rng(2).dirichlet(np.ones(7), 1000)
    print(f"fuse: {cpu_ms(lambda: fuse(probs, au, AU_CODES), 5) / 1000 * 1000:.2f} us/frame")


if __name__ == "__main__":
    main()
