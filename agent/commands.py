"""`facereason explain` (perception, then the reasoning agent, printed as text or JSON) and
`facereason serve` (the API and the page in app.py). Only argparse at import: the
command line's --help must not load torch or the web stack."""

from __future__ import annotations

import argparse
import json
import sys

BACKENDS = ["auto", "transformers", "openai", "engine"]
BACKEND_HELP = ("auto (default): the shipped fine-tuned model where its ship.json makes it the "
                "default, else the rule-based engine (agent.backends.resolve_backend); "
                "transformers: an in-process model (the shipped adapter unless --adapter); "
                "openai: a server such as vLLM; engine: rules only, no model")


def add_parser(sub: argparse._SubParsersAction) -> None:
    add_explain_parser(sub)
    add_batch_parser(sub)
    p = sub.add_parser("serve", help="serve the explain-expression API and the Gradio page")
    serve_args(p)
    p.set_defaults(func=run_serve)


def serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default=None, help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=None, help="port (default 7860)")
    p.add_argument("--backend", choices=BACKENDS, default=None, help=BACKEND_HELP)
    p.add_argument("--model", default=None, help="model folder or served model name")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (transformers backend)")
    p.add_argument("--base-url", default=None, help="e.g. http://127.0.0.1:8000/v1 (openai backend)")
    p.add_argument("--workers", type=int, default=None, help="requests analysed at once (default 1)")
    p.add_argument("--queue", type=int, default=None, help="requests waiting before 503 (default 8)")
    p.add_argument("--no-ui", action="store_true", help="API only, no Gradio page")
    p.add_argument("--preload", action="store_true", help="load the models before taking requests")


def run_serve(args: argparse.Namespace) -> int:
    import app

    return app.run_serve(args)


def add_explain_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explain", help="analyse a video/image and explain each face's expression")
    p.add_argument("path", help="a video or image")
    p.add_argument("--question", "-q", default=None, help="a question to answer in the explanation")
    p.add_argument("--model", default=None,
                   help="model: asset name, local folder or hub id (transformers), or the served "
                        "model name (openai); default: SmolLM2-135M-Instruct")
    p.add_argument("--adapter", default=None,
                   help="PEFT LoRA adapter folder ('none' to skip the project's default adapter)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None, help="API key for --backend openai (or $OPENAI_API_KEY)")
    p.add_argument("--label-set", default=None,
                   help="emotion label set: a name under prompts/labelsets/ or a YAML path")
    p.add_argument("--fps", type=float, default=None, help="frames per second to analyse")
    p.add_argument("--max-faces", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="F", help="also write the result (analysis + explanations) as JSON")
    p.add_argument("--srt", metavar="F", help="also write the caption as SubRip subtitles")
    p.add_argument("--vtt", metavar="F", help="also write the caption as WebVTT subtitles")
    p.add_argument("--stream", action="store_true",
                   help="show the model's records on stderr as they are written")
    p.set_defaults(func=run_explain)


def result_json(result) -> str:
    """An ExplainResult as `explain --json` writes it (and `batch --explain` stores it)."""
    payload = {"explanations": [e.model_dump() for e in result.explanations], "text": result.text,
               "model": result.model, "backend": result.backend, "timings": result.timings,
               "message": result.message,
               "analysis": json.loads(result.analysis.to_json())}
    return json.dumps(payload, indent=1)


def run_explain(args: argparse.Namespace) -> int:
    from agent import explain

    def token(piece: str) -> None:
        sys.stderr.write(piece)
        sys.stderr.flush()

    result = explain(args.path, question=args.question, model=args.model, adapter=args.adapter,
                     backend=args.backend, base_url=args.base_url, api_key=args.api_key,
                     label_set=args.label_set, fps=args.fps, max_faces=args.max_faces, seed=args.seed,
                     on_token=token if args.stream else None)
    if args.stream:
        sys.stderr.write("\n")
    print(result.text)
    notes = []
    for e in result.explanations:
        if e.fallback_used:
            notes.append(f"face {e.track_id}: the model's answer was unusable ({e.fallback_reason}); "
                         "this explanation comes from the Exp-CoT engine")
        for w in e.withheld:
            notes.append(f"face {e.track_id}: not shown: {w}")
        for claim in e.unfaithful_claims:
            notes.append(f"face {e.track_id}: unfaithful claim: {claim}")
    t = result.timings
    notes.append(f"model {result.model or '-'} ({result.backend}); perception {t.get('perception_s', 0):.1f} s, "
                 f"model {t.get('generation_s', 0):.1f} s ({t.get('tokens', 0):.0f} tokens), "
                 f"total {t.get('total_s', 0):.1f} s")
    print("\n" + "\n".join(f"[{n}]" for n in notes), file=sys.stderr)
    if args.json:
        with open(args.json, "w") as fh:
            fh.write(result_json(result))
        print(f"wrote {args.json}", file=sys.stderr)
    for fmt in ("srt", "vtt"):
        if getattr(args, fmt):
            from agent import subtitles

            print(f"wrote {subtitles.write(result, getattr(args, fmt), fmt)}", file=sys.stderr)
    return 0


def _positive(kind):
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
        return value
    return parse


def add_batch_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("batch", help="a dataset through perception (and --explain) on Ray, with an index")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="files, folders (searched recursively for videos and images) or manifests "
                        "(CSV or JSONL with a 'path' column; the other columns go to the index)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="one JSON result per input (as analyze/explain --json write it) and index.csv")
    p.add_argument("--workers", type=_positive(int), default=None,
                   help="Ray actors, one CPU each (default: every CPU of the cluster)")
    p.add_argument("--explain", action="store_true", help="store what `explain --json` writes")
    p.add_argument("--fps", type=_positive(float), default=None, help="frames per second to analyse")
    p.add_argument("--max-faces", type=_positive(int), default=None,
                   help="most faces per frame (default: as analyze, or explain with --explain)")
    p.add_argument("--csv", action="store_true", help="also write each input's CSV beside its JSON")
    p.add_argument("--address", default=None,
                   help="join this Ray cluster (e.g. 10.0.0.1:6379 or 'auto'; default: start one here)")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    p.add_argument("--model", default=None, help="model for --explain (as in `explain --model`)")
    p.add_argument("--adapter", default=None, help="LoRA adapter for --explain (transformers backend)")
    p.add_argument("--base-url", default=None, help="OpenAI-compatible server for --backend openai")
    p.add_argument("--api-key", default=None, help="API key for --backend openai (or $OPENAI_API_KEY)")
    p.set_defaults(func=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    from agent import batch

    settings = batch.Settings(fps=args.fps, max_faces=args.max_faces, explain=args.explain,
                              backend=args.backend, model=args.model, adapter=args.adapter,
                              base_url=args.base_url)
    summary = batch.run_batch(args.inputs, args.out, settings, workers=args.workers,
                              address=args.address, want_csv=args.csv, api_key=args.api_key)
    print(summary)
    return 0
