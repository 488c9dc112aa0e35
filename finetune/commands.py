"""`facereason train ...`: data, sft, grpo, eval, report, merge, ship, all."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="fine-tune the reasoner (data, SFT, GRPO, eval, merge)",
                              description="Fine-tune the reasoner: see docs/training.md.")
    sub = p.add_subparsers(dest="train_command", required=True, metavar="STEP")

    d = sub.add_parser("data", help="build a training dataset (synthetic, or from a public format)")
    d.add_argument("--out", required=True, help="dataset folder to write")
    d.add_argument("--format", choices=["synthetic", "fec-bench", "fea-20k", "expllm", "image-folder", "csv"],
                   default="synthetic")
    d.add_argument("--path", help="the annotation file or folder (not for synthetic)")
    d.add_argument("--media-root", help="folder the annotation's media paths are relative to")
    d.add_argument("--n-clips", type=int, default=200, help="synthetic clips to generate")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--test-share", type=float, default=0.15)
    d.add_argument("--tool-share", type=float, default=0.15,
                   help="share of video explanations that look with a tool before deciding")
    d.add_argument("--question-share", type=float, default=0.6,
                   help="share of synthetic faces that also get a follow-up question")
    d.add_argument("--long-share", type=float, default=0.0,
                   help="share of synthetic clips lasting 10-20 s instead of 3-9 s")
    d.add_argument("--fps", type=float, default=8.0, help="analysis frame rate for real videos")
    d.add_argument("--cache", default="out/cache", help="feature cache (by content hash)")
    d.add_argument("--num-proc", type=int, default=None, help="processes for feature extraction")
    d.set_defaults(func=_data)

    for name, helptext in (("sft", "supervised fine-tuning with LoRA"), ("grpo", "GRPO from the SFT adapter"),
                           ("eval", "the evaluation table"), ("all", "the whole recipe (make train)")):
        s = sub.add_parser(name, help=helptext)
        s.add_argument("--config", required=True, help="YAML file or a name in finetune/configs/")
        s.add_argument("overrides", nargs="*", help="key.sub=value settings that replace the config's")
        s.set_defaults(func=_stage, stage=name)

    r = sub.add_parser("report", help="loss/reward curves and the results block of docs/training.md")
    r.add_argument("--run", default="out/train")
    r.add_argument("--docs", default="docs/training.md")
    r.set_defaults(func=_report)

    m = sub.add_parser("merge", help="merge an adapter into its base: a full model folder vLLM can serve")
    m.add_argument("--adapter", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--base", help="base model folder (default: from the adapter's config)")
    m.set_defaults(func=_merge)

    s = sub.add_parser("ship", help="copy an adapter as fp16 with a model card (e.g. into agent/adapters/)")
    s.add_argument("--adapter", required=True)
    s.add_argument("--to", default="agent/adapters/facereason-smollm2-lora")
    s.add_argument("--run", default="out/train", help="the run whose evaluation goes into the card")
    s.add_argument("--system", default="grpo", choices=["sft", "grpo"],
                   help="which of the run's systems the adapter is (for the ship rule)")
    s.add_argument("--force", action="store_true", help="ship as the default even if the ship rule fails")
    s.add_argument("--opt-in", action="store_true",
                   help="if the ship rule fails, ship it anyway as a model users choose "
                        "(--backend transformers); the default stays the engine")
    s.set_defaults(func=_ship)


def _data(args: argparse.Namespace) -> int:
    from finetune.data import adapters, builder

    if args.format == "synthetic":
        dsd = builder.synthetic_dataset(args.n_clips, seed=args.seed, test_share=args.test_share,
                                        tool_share=args.tool_share,
                                        question_share=args.question_share,
                                        long_share=args.long_share, num_proc=args.num_proc)
    else:
        if not args.path:
            raise builder.TrainingDataError(f"--path is needed for --format {args.format}")
        kw = {} if args.format == "image-folder" else {"media_root": args.media_root}
        items = adapters.read(args.format, args.path, **kw)
        dsd = adapters.build_dataset(items, args.cache, fps=args.fps, test_share=args.test_share,
                                     tool_share=args.tool_share, num_proc=args.num_proc)
    builder.save(dsd, args.out)
    print(json.dumps({"out": args.out, **{k: len(v) for k, v in dsd.items()}}))
    return 0


def _stage(args: argparse.Namespace) -> int:
    if args.stage == "sft":
        from finetune import sft

        print(sft.train(args.config, args.overrides))
    elif args.stage == "grpo":
        from finetune import grpo

        print(grpo.train_in_processes(args.config, args.overrides))
    elif args.stage == "eval":
        from finetune import evaluate

        table = evaluate.evaluate(args.config, args.overrides)
        print(evaluate.markdown_table(table))
    else:
        from finetune import recipe

        print(json.dumps(recipe.run(args.config, args.overrides), indent=1))
    return 0


def _report(args: argparse.Namespace) -> int:
    from finetune import report

    print(report.write_report(args.run, args.docs))
    return 0


def _merge(args: argparse.Namespace) -> int:
    from finetune import merge

    print(merge.merge(args.adapter, args.out, args.base))
    return 0


def _ship(args: argparse.Namespace) -> int:
    from finetune import report

    print(report.ship(args.adapter, args.to, args.run, system=args.system, force=args.force,
                      opt_in=args.opt_in))
    return 0
