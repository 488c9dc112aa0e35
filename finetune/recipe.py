"""The whole recipe in one call: data -> SFT -> GRPO -> evaluation -> report -> ship.

    facereason train all --config recipe_smollm2      # `make train`
    facereason train all --config recipe_smoke        # `make train-smoke`

A recipe YAML names a config per stage (finetune/configs/); each stage skips
its work when its output exists (delete the folder to redo it), and SFT/GRPO
resume from their last checkpoint, so an interrupted run continues. The ship
stage copies the adapter of the stage it names (`adapter: grpo`) where the agent
finds it; the ship rule decides whether it becomes the default.
"""

from __future__ import annotations

import time
from pathlib import Path

from finetune import config as C


def build_data(section: dict) -> Path:
    from finetune.data import builder

    out = Path(section["out"])
    if (out / "dataset_dict.json").is_file():
        return out
    dsd = builder.synthetic_dataset(int(section.get("n_clips", 100)), seed=int(section.get("seed", 0)),
                                    test_share=float(section.get("test_share", 0.15)),
                                    tool_share=float(section.get("tool_share", 0.15)),
                                    question_share=float(section.get("question_share", 0.6)),
                                    long_share=float(section.get("long_share", 0.0)),
                                    num_proc=section.get("num_proc"))
    return builder.save(dsd, out)


def run(cfg_or_path: str | Path | dict, overrides: list[str] | None = None,
        stages: tuple[str, ...] = ("data", "sft", "grpo", "eval", "report", "ship")) -> dict:
    from finetune import evaluate, grpo, report, sft

    cfg = C.load(cfg_or_path, overrides)
    times: dict[str, float] = {}
    done: dict[str, str] = {}
    for stage in stages:
        if stage not in cfg:
            continue
        t0 = time.time()
        if stage == "data":
            done[stage] = str(build_data(cfg["data"]))
        elif stage == "sft":
            sub = C.load(cfg["sft"])
            adapter = Path(sub.get("output_dir", "out/sft")) / "adapter"
            done[stage] = str(adapter if (adapter / "adapter_config.json").is_file() else sft.train(sub))
        elif stage == "grpo":
            sub = C.load(cfg["grpo"])
            adapter = Path(sub.get("output_dir", "out/grpo")) / "adapter"
            done[stage] = str(adapter if (adapter / "adapter_config.json").is_file() else grpo.train_in_processes(sub))
        elif stage == "eval":
            evaluate.evaluate(cfg["eval"])
            done[stage] = str(Path(C.load(cfg["eval"]).get("output_dir", "out/eval")) / "eval.json")
        elif stage == "report":
            r = cfg["report"]
            done[stage] = str(report.write_report(r["run"], r["docs"]))
        elif stage == "ship":
            s = cfg["ship"]
            if s["adapter"] not in done:
                raise C.TrainingConfigError(f"ship: adapter '{s['adapter']}' names no stage that ran")
            done[stage] = str(report.ship(done[s["adapter"]], s["to"], s["run"], system=s["adapter"],
                                          opt_in=bool(s.get("opt_in", False))))
        times[stage] = round(time.time() - t0, 1)
        print(f"[train] {stage}: {done[stage]} ({times[stage]} s)", flush=True)
    return {"outputs": done, "wall_s": times}
