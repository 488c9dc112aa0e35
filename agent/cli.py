"""The `facereason` command line.

Each area of the project owns its sub-commands in a small module with an
`add_parser(subparsers)` function; this file only assembles them, so a
newcomer finds `facereason X` in `<area>/commands.py`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Modules that contribute sub-commands, in help order.
COMMAND_MODULES = [
    "tools.commands",  # analyze, assets
    "evals.commands",  # eval fec|emotion|au|explanations
    "agent.commands",  # explain, serve (app.py, imported when it runs)
    "finetune.commands",  # train data|sft|grpo|eval|report|merge|ship|all
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facereason",
        description="Explain facial expressions in videos and images.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ logging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `facereason assets list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a clear sentence for known problems, never a traceback
        from tools.errors import user_message

        msg = user_message(exc)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
