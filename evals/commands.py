"""`facereason eval fec|emotion|au|explanations`: the evaluation commands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="score captions, emotions, AUs or explanations",
                              description="Evaluate captions (FEC-Bench style), emotions, AUs or explanations.")
    sub = p.add_subparsers(dest="eval_command", required=True, metavar="TASK")

    f = sub.add_parser("fec", help="AutoDQ, TEM, ROUGE-L and CIDEr of captions against FEC-Bench references")
    f.add_argument("--ref", required=True, help="FEC-Bench test.json: [{id, video, caption}]")
    f.add_argument("--pred", help="predictions, jsonl of {id, caption}")
    f.add_argument("--videos", help="caption the reference videos in this folder with our agent first")
    f.add_argument("--model", help="with --videos: the agent's model; otherwise the llm judge's model")
    f.add_argument("--caption-workers", type=int, default=None,
                   help="with --videos: Ray actors captioning (default: one per CPU; see facereason batch)")
    f.add_argument("--address", default=None,
                   help="with --videos: an existing Ray cluster to caption on (default: a local one)")
    f.add_argument("--judge", choices=["offline", "llm"], default="offline")
    f.add_argument("--judge-model", help="the llm judge's model (needed with --videos)")
    f.add_argument("--base-url", help="OpenAI-compatible API root of the llm judge, e.g. http://127.0.0.1:8000/v1")
    f.add_argument("--api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the judge's API key (default OPENAI_API_KEY)")
    f.add_argument("--json-mode", choices=["schema", "object", "none"], default="schema",
                   help="how the llm judge's answers are constrained to JSON (default: json_schema)")
    f.add_argument("--cache", help="judge answer cache (default: OUT/judge_cache.sqlite, or none)")
    f.add_argument("--workers", type=int, default=4, help="parallel judge requests (default 4)")
    f.add_argument("--limit", type=int, help="score only the first N references")
    f.add_argument("--out", help="folder for results.json, report.md, items.jsonl (resumable)")
    f.set_defaults(func=_fec)

    e = sub.add_parser("emotion", help="accuracy, UAR, WAR, macro-F1 and a confusion matrix")
    e.add_argument("--data", required=True, help="labelled set: CSV (path,label[,pred]) / jsonl / json")
    e.add_argument("--pred", help="predictions keyed by id/path (default: a pred column, else our perception)")
    e.add_argument("--labels", help="comma-separated class order")
    e.add_argument("--out", help="folder for results.json, report.md, confusion.png")
    e.set_defaults(func=_emotion)

    a = sub.add_parser("au", help="AU F1 per AU, intensity Pearson and ICC(3,1)")
    a.add_argument("--data", required=True, help="CSV/jsonl with AU12_c / pred_AU12_c (and _r) columns")
    a.add_argument("--out", help="folder for results.json and report.md")
    a.set_defaults(func=_au)

    x = sub.add_parser("explanations", help="format validity, faithfulness and fallback rate")
    x.add_argument("--data", required=True, help="jsonl of Explanation records or {text} answers")
    x.add_argument("--out", help="folder for results.json")
    x.set_defaults(func=_explanations)


def _print(obj: dict) -> None:
    print(json.dumps(obj, indent=1))


def _fec(args: argparse.Namespace) -> int:
    from evals.fec import generate_predictions, load_predictions, load_references, run_fec
    from evals.judges import make_judge
    from tools.errors import FaceReasonError

    refs = load_references(args.ref)
    if args.limit:
        refs = refs[: args.limit]
    out = Path(args.out) if args.out else None
    if args.videos:
        if out is None:
            raise FaceReasonError("--videos needs --out (the generated captions are kept there).")
        out.mkdir(parents=True, exist_ok=True)
        preds, problems = generate_predictions(refs, args.videos, args.model, out / "predictions.jsonl",
                                               progress=sys.stderr.isatty(), workers=args.caption_workers,
                                               address=args.address)
        for p in problems:  # each is scored as a missing caption
            print(f"item {p['id']}: {p['message']} ({p['code']}); scored as missing", file=sys.stderr)
        judge_model = args.judge_model
    elif args.pred:
        preds = load_predictions(args.pred)
        judge_model = args.judge_model or args.model
    else:
        raise FaceReasonError("Give the captions to score with --pred, or --videos to generate them.")
    kwargs = {}
    if args.judge == "llm":
        cache = args.cache or (str(out / "judge_cache.sqlite") if out else None)
        kwargs = {"base_url": args.base_url, "model": judge_model, "cache_path": cache,
                  "api_key": os.environ.get(args.api_key_env), "json_mode": args.json_mode}
    judge = make_judge(args.judge, **kwargs)
    # the offline judge shares one small model between threads: more workers only contend for 2 cores
    workers = args.workers if args.judge == "llm" else 1
    result = run_fec(preds, refs, judge, out_dir=out, workers=workers, progress=sys.stderr.isatty())
    _print(result["summary"])
    return 0


def _emotion(args: argparse.Namespace) -> int:
    from evals.runner import run_emotion

    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    r = run_emotion(args.data, args.pred, args.out, labels)
    _print({k: r[k] for k in ("n", "accuracy", "uar", "war", "macro_f1")})
    return 0


def _au(args: argparse.Namespace) -> int:
    from evals.runner import run_au

    r = run_au(args.data, args.out)
    _print({k: r[k] for k in ("n", "mean_f1", "mean_pearson", "mean_icc31", "mean_mae")})
    return 0


def _explanations(args: argparse.Namespace) -> int:
    from evals.runner import run_explanations

    r = run_explanations(args.data, args.out)
    _print({k: v for k, v in r.items() if k != "items"})
    return 0
