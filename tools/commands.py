"""`facereason analyze` and `facereason assets`."""

from __future__ import annotations

import argparse
import sys
import time


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="perception only: faces, landmarks, AUs, emotion, timeline")
    p.add_argument("path", help="a video (mp4, mov, webm, mkv, avi) or image (jpg, png, ...)")
    p.add_argument("--json", metavar="F", help="write the Analysis as JSON")
    p.add_argument("--csv", metavar="F", help="write OpenFace/py-feat style CSV (one row per face per frame)")
    p.add_argument("--plot", metavar="F", help="write a PNG per face: AU heatmap and emotion timeline")
    p.add_argument("--fps", type=float, default=None, help="frames per second to analyse (default: every frame)")
    p.add_argument("--max-faces", type=int, default=8, help="most faces per frame (default 8)")
    p.add_argument("--landmarks", action="store_true", help="include the 478 landmarks in the JSON")
    p.add_argument("--srt", metavar="F", help="write the rule-based caption as SubRip subtitles "
                                              "(`facereason explain --srt` writes the model's)")
    p.add_argument("--vtt", metavar="F", help="the same as WebVTT subtitles")
    p.set_defaults(func=run_analyze)

    a = sub.add_parser("assets", help="list or fetch the offline model files and test media")
    asub = a.add_subparsers(dest="assets_command", required=True, metavar="ACTION")
    f = asub.add_parser("fetch", help="download, verify and cache assets (all by default)")
    f.add_argument("names", nargs="*", help="asset names (see `facereason assets list`)")
    f.add_argument("--force", action="store_true", help="fetch again even if cached")
    f.set_defaults(func=run_assets_fetch)
    ls = asub.add_parser("list", help="show each asset, where it is and whether it is present")
    ls.set_defaults(func=run_assets_list)


def analysis_json(analysis, landmarks: bool = False) -> str:
    """An Analysis as `analyze --json` writes it (and `batch` stores it)."""
    return analysis.to_json(include_landmarks=landmarks, indent=1)


def run_analyze(args: argparse.Namespace) -> int:
    from tools.pipeline import analyze
    from tools.summary import summarize

    t0 = time.perf_counter()
    analysis = analyze(args.path, fps=args.fps, max_faces=args.max_faces, progress=None)
    elapsed = time.perf_counter() - t0
    print(summarize(analysis, elapsed))
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(analysis_json(analysis, args.landmarks))
        print(f"wrote {args.json}")
    if args.csv:
        analysis.to_csv(args.csv)
        print(f"wrote {args.csv}")
    if args.plot:
        from tools.plots import plot_analysis

        for written in plot_analysis(analysis, args.plot):
            print(f"wrote {written}")
    if args.srt or args.vtt:
        from agent import subtitles
        from agent.graph import result_from_analysis

        result = result_from_analysis(analysis)
        for fmt in ("srt", "vtt"):
            if getattr(args, fmt):
                print(f"wrote {subtitles.write(result, getattr(args, fmt), fmt)}")
    return 0


def run_assets_fetch(args: argparse.Namespace) -> int:
    from tools import assets

    names = args.names or list(assets.REGISTRY)
    for name in names:
        p = assets.fetch(name, force=args.force)
        print(f"{name:20s} {p}")
    if not args.names or assets.SMOLLM2 in names or "smollm2-135m-gguf" in names:
        print(f"{assets.SMOLLM2:20s} {assets.model_dir()}")
    return 0


def run_assets_list(args: argparse.Namespace) -> int:
    from tools import assets

    rows = assets.status()
    for r in rows:
        mark = "present" if r["present"] else "MISSING"
        print(f"{r['name']:20s} {mark:8s} {r['path']}")
        print(f"{'':20s} {r['package']} ({r['license']}): {r['description']}")
    if not all(r["present"] for r in rows):
        print("\nFetch what is missing with: facereason assets fetch", file=sys.stderr)
    return 0
