"""`facereason batch` speed on the real test media: serial vs 1 and 2 Ray workers.

    python benchmarks/batch.py [--workers 1 2] [--repeats 1] [--explain]
    python benchmarks/batch.py --copies 4 --media WolfgangLanger_Pexels.mp4   # issue 15's set

Measured in one run on the same files (every file of the test-media asset: videos and
photos, one face, several faces, none): `analyze` on each file in this process (the serial
path, models already loaded), then `run_batch` into a fresh output folder per worker count,
each starting its own local Ray cluster. Reports wall seconds (median of the repeats), the
part spent starting Ray and the workers' models, ray.init alone, and the load average, since
numbers taken beside another job are not the machine's.
Not a test: timings never decide pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")

from agent import batch  # noqa: E402
from agent.cluster import cluster  # noqa: E402
from tools import assets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--explain", action="store_true")
    ap.add_argument("--media", help="one test-media file instead of the whole folder")
    ap.add_argument("--copies", type=int, default=1, help="with --media: that many copies of it")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory()
    folder = assets.media("single_face.mp4").parent
    if args.media:
        folder = Path(tmp.name)
        for i in range(args.copies):
            shutil.copy(assets.media(args.media), folder / f"copy{i}_{args.media}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    settings = batch.Settings(explain=args.explain)
    report: dict = {"files": len(files), "media": args.media or "all test media", "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": os.getloadavg()}

    if not args.explain:
        from tools.pipeline import analyze

        analyze(files[0])  # models loaded before the clock starts
        runs = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for f in files:
                analyze(f, progress=None)
            runs.append(time.perf_counter() - t0)
        report["serial_s"] = round(statistics.median(runs), 2)

    import ray

    t0 = time.perf_counter()
    with cluster(workers=2):
        report["ray_init_s"] = round(time.perf_counter() - t0, 2)
    for n in args.workers:
        walls, starts = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as out:
                s = batch.run_batch([folder], out, settings, workers=n, progress=False)
                assert s.done == len(files) and not ray.is_initialized()
                walls.append(s.seconds)
                starts.append(s.startup_s)
        report[f"workers_{n}"] = {"wall_s": round(statistics.median(walls), 2),
                                  "startup_s": round(statistics.median(starts), 2)}
    report["load_after"] = os.getloadavg()
    w = {n: report[f"workers_{n}"] for n in args.workers}
    if 1 in w and 2 in w:  # the work itself, start-up taken out
        report["speedup_2_over_1"] = round((w[1]["wall_s"] - w[1]["startup_s"])
                                           / (w[2]["wall_s"] - w[2]["startup_s"]), 2)
    print(json.dumps(report, indent=1))
    tmp.cleanup()


if __name__ == "__main__":
    main()
