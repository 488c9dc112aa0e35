"""Reward-driven RL: TRL GRPOTrainer from the SFT adapter, with finetune/rewards.py.

    facereason train grpo --config grpo_smollm2
    accelerate launch --config_file finetune/configs/accelerate_multi_gpu.yaml \
        -m finetune.grpo --config grpo_gpu      # use_vllm: true there

The policy starts from the SFT adapter. With `beta: 0` (the CPU recipe: no
reference model to run) the SFT adapter itself keeps training. With a KL term
(`beta > 0`) the reference must be the SFT policy, not the base model, so the
SFT adapter is merged into the base weights in memory, a fresh LoRA is trained
on top (PEFT's reference is then the merged SFT model with the new adapter off),
and at the end the two adapters are concatenated into one (PEFT
`add_weighted_adapter(..., combination_type="cat")`, exact: the sum of two LoRA
updates is a LoRA of the summed rank). Either way the result is one adapter on
the base model, in output_dir/adapter.

Prompts are the decision rows' conversations up to the final record: the
agent's opening turns, plus the tool request and its result where the row has
one, so the policy is rewarded on the record it writes after looking. (TRL's
own tool loop runs stateless functions; ours answer from each row's
Analysis.) Records are short (~35 tokens), so a step costs a fraction of what
the prose answers of the first version did. `override_share` fills part of
the prompts with faces whose rule-based reading (shown in the prompt) is
wrong: there the reward, not imitation, has to teach the model to override.
The rewards read the dataset's label columns (see finetune/rewards.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import yaml

from agent import models
from finetune import config as C
from finetune import rewards
from finetune.data import builder
from finetune.sft import last_checkpoint, lora_config, save_processing

REWARD_COLUMNS = ["prompt", "label", "aus", "segment_order", "analysis", "track_id"]
MORE_TO_DO = 3  # exit status of a process that stopped after `process_steps` with steps left


def _memory_callbacks(process_steps: int | None):
    """Callbacks against CPU memory growth: hand freed heap back to the OS every step
    (glibc keeps what variable-length generation batches leave fragmented), and stop
    this process after `process_steps` steps (saving a checkpoint) so a fresh one resumes."""
    import ctypes
    import gc

    from transformers import TrainerCallback

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        libc = None

    class Trim(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.first = state.global_step

        def on_step_end(self, args, state, control, **kw):
            gc.collect()
            if libc is not None:
                libc.malloc_trim(0)
            if process_steps and state.global_step - self.first >= process_steps \
                    and state.global_step < state.max_steps:
                control.should_save = True
                control.should_training_stop = True
            return control

    return [Trim()]


def train_in_processes(cfg_or_path, overrides: list[str] | None = None) -> Path:
    """Run GRPO as `python -m finetune.grpo` processes until the adapter exists: each
    does at most `process_steps` steps, then the next resumes from its checkpoint."""
    import math
    import subprocess
    import sys

    cfg = C.load(cfg_or_path, overrides)
    out = Path(cfg.get("output_dir", "out/grpo"))
    n = cfg.get("process_steps")
    if not n:
        return train(cfg)
    total = int(cfg.get("grpo", {}).get("max_steps", 0)) or 10**6
    out.mkdir(parents=True, exist_ok=True)
    frozen = out / "grpo_config.yaml"  # the resolved config every process reads
    frozen.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "_path"}, sort_keys=False))
    cmd = [sys.executable, "-m", "finetune.grpo", "--config", str(frozen)]
    for _ in range(math.ceil(total / int(n)) + 2):  # +2: one retry after a crash
        rc = subprocess.call(cmd)
        if (out / "adapter" / "adapter_config.json").is_file():
            return out / "adapter"
        if rc not in (0, MORE_TO_DO) and not last_checkpoint(out):
            break
    raise C.TrainingConfigError(f"GRPO did not finish in {out}; see the log above")


def _prompts(ds, n: int | None, vlm: bool, override_share: float | None = None):
    if "kind" in ds.column_names:
        ds = ds.filter(lambda r: r["kind"] == "decide", desc="decision rows")
    if override_share:
        ds = _mix_overrides(ds, float(override_share), n)
    elif n is not None:
        ds = ds.select(range(min(int(n), len(ds))))
    keep = [*REWARD_COLUMNS, "images"] if vlm else REWARD_COLUMNS
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def rule_is_wrong(row: dict) -> bool:
    """Whether the rule-based reading the prompt shows differs from the true label."""
    from agent import engine
    from tools.analysis import Analysis

    a = Analysis.from_json(row["analysis"])
    return engine.conclude(a, a.track(row["track_id"])).label != row["label"]


def _mix_overrides(ds, share: float, n: int | None):
    """`n` prompts of which `share` are faces the rules read wrong, spread evenly in order."""
    wrong_flags = [rule_is_wrong(r) for r in ds]
    wrong = [i for i, w in enumerate(wrong_flags) if w]
    right = [i for i, w in enumerate(wrong_flags) if not w]
    n = len(ds) if n is None else min(int(n), len(ds))
    n_wrong = min(len(wrong), round(n * share))
    picked = [wrong[:n_wrong], right[:n - n_wrong]]
    # Spread the two kinds evenly (what a run with `shuffle_dataset: false` sees): order
    # the rows by their relative position within their own kind.
    spread = sorted(((k + 0.5) / len(rows), i) for rows in picked for k, i in enumerate(rows))
    return ds.select([i for _, i in spread])


def combine_adapters(base_path: str, first: str | Path, second: str | Path, out: str | Path) -> Path:
    """One adapter equal to applying `first` then `second` (LoRA concatenation), saved to `out`."""
    models.compat()
    from peft import PeftModel

    base, proc = models.load(base_path)
    model = PeftModel.from_pretrained(base, str(first), adapter_name="first")
    model.load_adapter(str(second), adapter_name="second")
    model.add_weighted_adapter(["first", "second"], [1.0, 1.0], adapter_name="combined",
                               combination_type="cat")
    model.set_adapter("combined")
    for name in ("first", "second"):
        model.delete_adapter(name)
    out = Path(out)
    model.save_pretrained(str(out))
    # PEFT writes a named adapter into a subfolder; keep the plain layout loaders expect.
    sub = out / "combined"
    if sub.is_dir():
        for f in sub.iterdir():
            f.replace(out / f.name)
        sub.rmdir()
    save_processing(base_path, out)
    return out


def train(cfg_or_path: str | Path | dict, overrides: list[str] | dict | None = None) -> Path:
    """Run GRPO as configured; returns the adapter folder."""
    models.compat()
    from peft import PeftModel
    from trl import GRPOConfig, GRPOTrainer

    cfg = C.load(cfg_or_path, overrides)
    out = Path(cfg.get("output_dir", "out/grpo"))
    model_path = models.resolve_model(cfg.get("model"))
    dsd = builder.load(cfg["data"])
    vlm = models.is_vlm(model_path)
    train_ds = _prompts(dsd["train"].shuffle(seed=int(cfg.get("shuffle_seed", 1))),
                        cfg.get("max_train_rows"), vlm, cfg.get("override_share"))
    names = list(cfg.get("rewards", list(rewards.DEFAULT_WEIGHTS)))
    weights = cfg.get("reward_weights", {})
    section = dict(cfg.get("grpo", {}))
    section.setdefault("reward_weights", [float(weights.get(n, rewards.DEFAULT_WEIGHTS.get(n, 1.0)))
                                          for n in names])
    args = C.trl_args(GRPOConfig, {"report_to": "none", **section}, output_dir=str(out))
    model, proc = models.load(model_path, dtype=cfg.get("dtype", "float32"))
    sft_adapter = cfg.get("adapter")
    peft_config = None
    stacked = False
    if sft_adapter and args.beta > 0:
        model = PeftModel.from_pretrained(model, str(sft_adapter)).merge_and_unload()
        peft_config, stacked = lora_config(cfg.get("lora", {})), True
    elif sft_adapter:
        model = PeftModel.from_pretrained(model, str(sft_adapter), is_trainable=True)
    else:
        peft_config = lora_config(cfg.get("lora", {}))
    trainer = GRPOTrainer(model=model, reward_funcs=rewards.get(names), args=args,
                          train_dataset=train_ds, processing_class=proc,
                          peft_config=peft_config,
                          callbacks=_memory_callbacks(cfg.get("process_steps")))
    resume = cfg.get("resume", "auto")
    ckpt = last_checkpoint(out) if resume == "auto" else (resume or None)
    t0 = time.time()
    trainer.train(resume_from_checkpoint=ckpt)
    if trainer.state.global_step < trainer.state.max_steps:
        return out  # stopped after process_steps: a new process resumes (train_in_processes)
    adapter = out / "adapter"
    if stacked:
        trainer.save_model(str(out / "grpo_delta"))
        combine_adapters(model_path, sft_adapter, out / "grpo_delta", adapter)
    else:
        trainer.save_model(str(adapter))
        save_processing(model_path, adapter)
    C.write_run_report(out, trainer, t0, stage="grpo", model=model_path, sft_adapter=sft_adapter,
                       rewards=names, reward_weights=args.reward_weights,
                       train_rows=len(train_ds), resumed_from=ckpt)
    return adapter


def _train_or_more(cfg, overrides=None) -> Path:
    result = train(cfg, overrides)
    if result.name != "adapter":
        raise SystemExit(MORE_TO_DO)
    return result


def main(argv: list[str] | None = None) -> int:
    return C.stage_main(_train_or_more, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
