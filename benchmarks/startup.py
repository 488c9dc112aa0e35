"""Whole-process speed of `facereason analyze` on a video against a bare landmarker process.

    python benchmarks/startup.py [--repeats 3] [--video WolfgangLanger_Pexels.mp4]

Both are fresh processes timed from launch to exit, in the same run, alternating:
`facereason analyze VIDEO` (every frame, as a user runs it) and a bare loop that
imports only PyAV and MediaPipe, decodes the same file and runs a FaceLandmarker
(VIDEO mode, blendshapes and pose on, as tools/landmarks.py configures it) on
every frame. Reports the median wall time of each, frames/s and their ratio
(issue 15 asks for >= 0.8). Not a test: timings never decide pass/fail.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tools import assets  # noqa: E402

BARE = r"""
import sys, av, mediapipe as mp
from mediapipe.tasks.python import BaseOptions, vision
opts = vision.FaceLandmarkerOptions(
    base_options=BaseOptions(model_asset_path=sys.argv[2]), running_mode=vision.RunningMode.VIDEO,
    num_faces=8, output_face_blendshapes=True, output_facial_transformation_matrixes=True)
lm = vision.FaceLandmarker.create_from_options(opts)
n, last = 0, -1
with av.open(sys.argv[1]) as c:
    for f in c.decode(video=0):
        ms = max(int(round(float(f.time) * 1000)), last + 1)
        last = ms
        lm.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=f.to_ndarray(format="rgb24")), ms)
        n += 1
print(n)
"""


def _time(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return time.perf_counter() - t0, out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--video", default="WolfgangLanger_Pexels.mp4")
    a = ap.parse_args()
    video = assets.media(a.video)
    cli = str(Path(sys.executable).with_name("facereason"))
    bare_cmd = [sys.executable, "-c", BARE, str(video), str(assets.path("face-landmarker"))]
    ours, bare, frames = [], [], 0
    for _ in range(a.repeats):
        s, out = _time(bare_cmd)
        bare.append(s)
        frames = int(out.strip().splitlines()[-1])
        s, _ = _time([cli, "analyze", str(video)])
        ours.append(s)
    mo, mb = statistics.median(ours), statistics.median(bare)
    print(f"{a.video}: {frames} frames, median of {a.repeats} (launch to exit)")
    print(f"  bare landmarker process  {mb:6.2f} s  {frames / mb:6.1f} frames/s")
    print(f"  facereason analyze       {mo:6.2f} s  {frames / mo:6.1f} frames/s")
    print(f"  ratio (analyze / bare frames/s): {mb / mo:.2f}")


if __name__ == "__main__":
    main()
