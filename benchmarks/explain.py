"""`explain` end to end on the real sample videos with the default model.

    python benchmarks/explain.py [--runs 5] [--fps F] [--videos single_face.mp4 ...]
                                 [--max-new-tokens N] [--json out.json]

Per video, over `--runs` repeats (after one warm-up run that also loads the
model): perception time, time to the first streamed token (from the start of
the call, and from the start of the model turn), generated tokens per face,
tokens/s, total, how often the model's record was unusable (the engine
fallback rate), and the follow-up questions of CHAT_QUESTIONS through `chat`
(seconds per answer, rule-based fallback rate). Peak memory is the process's
max RSS. Reports medians. Not a test: timings never decide pass/fail; run it
on a quiet machine.
Targets (issue 12): single_face.mp4 explained in <= 5 s, first token <= 1.5 s,
<= 160 generated tokens a face, WolfgangLanger_Pexels.mp4 <= 10 s, a chat
answer <= 3 s (median).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from agent import ChatSession, chat, explain  # noqa: E402
from tools import assets  # noqa: E402

VIDEOS = ["single_face.mp4", "WolfgangLanger_Pexels.mp4"]
CHAT_QUESTIONS = ["What happens at second 2?", "When does the smile start?", "Why do you say that?"]


def one_run(path: Path, fps: float | None, max_new_tokens: int, backend: str = "auto") -> dict:
    marks: dict[str, float] = {}

    def on_token(_: str) -> None:
        marks.setdefault("first", time.perf_counter())

    t0 = time.perf_counter()
    r = explain(path, fps=fps, on_token=on_token, max_new_tokens=max_new_tokens, backend=backend)
    total = time.perf_counter() - t0
    gens = r.stats.get("generations", [])
    session = ChatSession.start(r)
    chat_s, chat_fallbacks, answers = [], 0, []
    for q in CHAT_QUESTIONS:
        c0 = time.perf_counter()
        ans = chat(session, q)
        chat_s.append(time.perf_counter() - c0)
        chat_fallbacks += ans.fallback_used
        answers.append(ans)
    first_model_ttft = next((g["ttft"] for g in gens if g["ttft"] is not None), None)
    return {
        "perception_s": r.timings.get("perception_s", 0.0),
        "first_token_s": (marks["first"] - t0) if "first" in marks else None,
        "model_ttft_s": first_model_ttft,
        "tokens": int(r.timings.get("tokens", 0)),
        "tokens_per_face": r.timings.get("tokens", 0) / max(len(r.explanations), 1),
        "chat_s": statistics.median(chat_s),
        "chat_fallback_rate": chat_fallbacks / len(CHAT_QUESTIONS),
        "tokens_per_s": r.timings.get("tokens_per_s", 0.0),
        "decode_tokens_per_s": r.timings.get("decode_tokens_per_s", 0.0),
        "prompt_tokens": next((g["prompt_tokens"] for g in gens), 0),
        "steps_per_face": sum(g.get("steps") or 0 for g in gens) / max(len(r.explanations), 1),
        "chat_answered_by": [ans.answered_by for ans in answers],
        "generation_s": r.timings.get("generation_s", 0.0),
        "turns": r.stats.get("turns", 0),
        "total_s": total,
        "faces": len(r.explanations),
        "fallbacks": sum(e.fallback_used for e in r.explanations),
        "unfaithful": sum(len(e.unfaithful_claims) for e in r.explanations),
        "model": r.model,
    }


def median(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--fps", type=float, default=None, help="analysis frame rate (default: every frame)")
    ap.add_argument("--videos", nargs="*", default=VIDEOS)
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--json", metavar="F")
    ap.add_argument("--backend", default="auto",
                    help="auto (the ship rule's default), transformers (the fine-tuned model), engine")
    ap.add_argument("--no-draft", action="store_true",
                    help="decode forced tokens one by one (no ForcedDraft), for comparison")
    args = ap.parse_args(argv)
    if args.no_draft:
        from agent.transformers_backend import TransformersBackend

        TransformersBackend.draft_forced = False

    t0 = time.perf_counter()
    warm = one_run(assets.media(args.videos[0]), args.fps, args.max_new_tokens, args.backend)
    print(f"warm-up (includes model load): {time.perf_counter() - t0:.2f} s, model {warm['model']}")
    report: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                "load_avg_at_start": os.getloadavg()[0],
                                "threads_env": os.environ.get("FACEREASON_TORCH_THREADS")},
                    "runs": args.runs, "fps": args.fps, "videos": {}}
    for name in args.videos:
        rows = [one_run(assets.media(name), args.fps, args.max_new_tokens, args.backend)
                for _ in range(args.runs)]
        summary = {k: median(rows, k) for k in ("perception_s", "first_token_s", "model_ttft_s",
                                                "tokens_per_s", "decode_tokens_per_s", "prompt_tokens",
                                                "tokens", "tokens_per_face", "steps_per_face", "total_s", "turns",
                                                "chat_s", "chat_fallback_rate")}
        faces = sum(r["faces"] for r in rows)
        summary["fallback_rate"] = sum(r["fallbacks"] for r in rows) / faces if faces else None
        summary["unfaithful_per_face"] = sum(r["unfaithful"] for r in rows) / faces if faces else None
        report["videos"][name] = {"median": summary, "runs": rows}
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["load_avg_at_end"] = os.getloadavg()[0]

    def f(v: float | None, nd: int = 2) -> str:
        return "-" if v is None else f"{v:.{nd}f}"

    print(f"\nmedian of {args.runs} runs, fps={args.fps or 'all frames'}, "
          f"load avg {report['machine']['load_avg_at_start']:.1f} -> {report['load_avg_at_end']:.1f}")
    print("| video | perception s | first token s (call / model turn) | tokens/s (all / decode) "
          "| prompt tokens | generated tokens a face | forward passes a face | total s | turns "
          "| fallback rate | chat answer s | chat fallback rate |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, v in report["videos"].items():
        m = v["median"]
        print(f"| {name} | {f(m['perception_s'])} | {f(m['first_token_s'])} / {f(m['model_ttft_s'])} "
              f"| {f(m['tokens_per_s'], 1)} / {f(m['decode_tokens_per_s'], 1)} | {f(m['prompt_tokens'], 0)} "
              f"| {f(m['tokens_per_face'], 0)} | {f(m['steps_per_face'], 0)} | {f(m['total_s'])} | {f(m['turns'], 0)} "
              f"| {f(m['fallback_rate'])} | {f(m['chat_s'])} | {f(m['chat_fallback_rate'])} |")
    print(f"peak RSS {report['peak_rss_mb']:.0f} MB; chat answered by "
          f"{sorted({b for v in report['videos'].values() for r in v['runs'] for b in r['chat_answered_by']})}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
