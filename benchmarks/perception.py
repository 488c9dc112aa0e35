"""Perception speed on a real video: `analyze` end to end vs the bare landmarker.

    python benchmarks/perception.py [--repeats 5] [--video WolfgangLanger_Pexels.mp4] [--tiny-clip]

Both are measured in the same run on the same frames (every frame, no
sampling): the landmarker alone on frames decoded in advance, and `analyze`
from the file (decoding, landmarks, tracking, measurement, result). Reports
the median of the repeats, their ratio, and the process's peak memory.
`--tiny-clip` adds a row with CLIP scene context on, using a tiny randomly
initialised open_clip model (no real CLIP weights ship offline), so the cost
of the context code path itself is visible.
Not a test: timings never decide pass/fail.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

from tools import assets  # noqa: E402
from tools.landmarks import LandmarkDetector  # noqa: E402
from tools.pipeline import analyze  # noqa: E402
from tools.video import Media  # noqa: E402


def decode_all(path: Path) -> list:
    with Media(path) as m:
        return [(f.time, f.rgb) for f in m.frames()]


def time_decode(path: Path) -> float:
    t0 = time.perf_counter()
    with Media(path) as m:
        n = sum(1 for _ in m.frames())
    return n / (time.perf_counter() - t0)


def time_landmarker(frames: list) -> float:
    with LandmarkDetector(video=True) as det:
        det.detect(frames[0][1], -1.0)  # graph start-up is not per-frame work
        t0 = time.perf_counter()
        for t, rgb in frames:
            det.detect(rgb, t)
        return len(frames) / (time.perf_counter() - t0)


def time_analyze(path: Path, n_frames: int, **kw) -> float:
    t0 = time.perf_counter()
    a = analyze(path, progress=False, **kw)
    dt = time.perf_counter() - t0
    assert a.sampling.frames_analysed == n_frames
    return n_frames / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--video", default="WolfgangLanger_Pexels.mp4")
    ap.add_argument("--tiny-clip", action="store_true", help="also time CLIP context (tiny model)")
    args = ap.parse_args()
    path = assets.media(args.video)
    frames = decode_all(path)
    n = len(frames)
    rows = {"decode only": [], "landmarker only": [], "analyze end to end": []}
    if args.tiny_clip:
        import tempfile

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_models import tiny_clip

        clip_dir = Path(tempfile.mkdtemp(prefix="tinyclip-"))
        os.environ["FACEREASON_CLIP_CHECKPOINT"] = str(tiny_clip(clip_dir)[2])
        rows["analyze + CLIP (tiny)"] = []
    for _ in range(args.repeats):
        rows["decode only"].append(time_decode(path))
        rows["landmarker only"].append(time_landmarker(frames))
        rows["analyze end to end"].append(time_analyze(path, n, scene_context=False))
        if args.tiny_clip:
            rows["analyze + CLIP (tiny)"].append(time_analyze(path, n, scene_context=True))
    med = {k: statistics.median(v) for k, v in rows.items()}
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"# {args.video}: {n} frames, {frames[0][1].shape[1]}x{frames[0][1].shape[0]}; "
          f"median of {args.repeats}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores")
    print(f"| {'stage':22s} | {'frames/s (median)':>17s} | {'min':>6s} | {'max':>6s} |")
    print(f"|{'-' * 24}|{'-' * 19}|{'-' * 8}|{'-' * 8}|")
    for k, v in rows.items():
        print(f"| {k:22s} | {med[k]:17.1f} | {min(v):6.1f} | {max(v):6.1f} |")
    ratio = med["analyze end to end"] / med["landmarker only"]
    print(f"\nend-to-end / landmarker-only throughput: {ratio:.2f}")
    print(f"peak resident memory of this process: {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
