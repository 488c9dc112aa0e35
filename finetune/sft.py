"""Supervised fine-tuning: TRL SFTTrainer + PEFT LoRA, from a YAML config.

    facereason train sft --config sft_smollm2
    accelerate launch --config_file finetune/configs/accelerate_multi_gpu.yaml \
        -m finetune.sft --config sft_qwen2vl

The loss covers assistant turns only (the tool calls and the final answer), via
TRL's `assistant_only_loss`: the chat template must mark assistant turns with
{% generation %}. SmolLM2's ChatML template does not, so the training copy in
finetune/templates/chatml_training.jinja is used after checking that it renders
the training data byte-identically. Vision-language models (Qwen2-VL family)
train on rows with an `images` column; their templates are recognised by TRL.

Checkpoints go to output_dir/checkpoint-N; a rerun resumes from the last one
(`resume: auto`). The adapter is saved to output_dir/adapter, the loss history
to output_dir/log_history.json.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from agent import models
from finetune import config as C
from finetune.data import builder

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHATML_TRAINING = TEMPLATES / "chatml_training.jinja"


def _tokenizer(proc):
    return getattr(proc, "tokenizer", proc)


def training_template(proc, rows: list[dict]) -> str | None:
    """A chat template file with generation markers, or None when the model's own has them
    or TRL patches it. Raises when neither works, naming the problem."""
    tpl = proc.chat_template if isinstance(getattr(proc, "chat_template", None), str) else None
    if tpl and "{% generation %}" in tpl.replace("{%- generation %}", "{% generation %}"):
        return None
    try:
        from trl.chat_template_utils import get_training_chat_template

        if get_training_chat_template(proc) is not None or tpl is None:
            return None
    except ValueError:
        pass
    tok = _tokenizer(proc)
    ours = CHATML_TRAINING.read_text()
    for r in rows[:8]:
        a = tok.apply_chat_template(r["messages"], tokenize=False)
        b = tok.apply_chat_template(r["messages"], tokenize=False, chat_template=ours)
        if a != b:
            raise C.TrainingConfigError(
                "the model's chat template is not ChatML and has no {% generation %} markers; "
                "give a training template with `chat_template_path` in the sft section")
    return str(CHATML_TRAINING)


def save_processing(model_path: str, out: Path) -> None:
    """Save the base model's own tokenizer/processor beside an adapter: the training
    template (generation markers) is for masking only, inference uses the original."""
    models.load_processor(model_path).save_pretrained(str(out))
    stale = out / "training_args.bin"
    if stale.exists():  # a pickle of the run's arguments: not needed to load the adapter
        stale.unlink()


def last_checkpoint(out: Path) -> str | None:
    ckpts = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return str(ckpts[-1]) if ckpts else None


def oversample(ds, factors: dict[str, int] | None):
    """Repeat the rows of some scenarios: {crying_then_laughing: 3} puts each such row in three
    times (a continuation run that must learn a new scenario without forgetting the others)."""
    if not factors:
        return ds
    from datasets import concatenate_datasets

    unknown = set(factors) - set(ds.unique("scenario"))
    if unknown:
        raise C.TrainingConfigError(f"oversample: no rows of scenario {sorted(unknown)} in the data")
    extra = [ds.filter(lambda r, s=s: r["scenario"] == s, desc=f"oversample {s}")
             for s, k in factors.items() for _ in range(int(k) - 1)]
    return concatenate_datasets([ds, *extra]) if extra else ds


def _rows(ds, n: int | None, vlm: bool, kinds: list[str] | None = None):
    if kinds and "kind" in ds.column_names:
        ds = ds.filter(lambda r: r["kind"] in kinds, desc="row kinds")
    if n is not None:
        ds = ds.select(range(min(int(n), len(ds))))
    keep = ["messages", "images"] if vlm else ["messages"]
    return ds.remove_columns([c for c in ds.column_names if c not in keep])


def lora_config(section: dict[str, Any]):
    from peft import LoraConfig

    return C.trl_args(LoraConfig, {"task_type": "CAUSAL_LM", **section})


def train(cfg_or_path: str | Path | dict, overrides: list[str] | dict | None = None) -> Path:
    """Run SFT as configured; returns the adapter folder."""
    models.compat()
    from trl import SFTConfig, SFTTrainer

    cfg = C.load(cfg_or_path, overrides)
    out = Path(cfg.get("output_dir", "out/sft"))
    model_path = models.resolve_model(cfg.get("model"))
    vlm = models.is_vlm(model_path)
    dsd = builder.load(cfg["data"]) if "data" in cfg else None
    if dsd is None:
        raise C.TrainingConfigError("the config needs `data:` (a dataset folder from `facereason train data`)")
    kinds = cfg.get("kinds")
    train_ds = _rows(oversample(dsd["train"], cfg.get("oversample")).shuffle(seed=int(cfg.get("shuffle_seed", 0))),
                     cfg.get("max_train_rows"), vlm, kinds)
    eval_ds = _rows(dsd["test"], cfg.get("max_eval_rows"), vlm, kinds) if cfg.get("max_eval_rows") else None
    init = cfg.get("init_adapter")  # continue an adapter (new data, more epochs) instead of a fresh LoRA
    if init and not Path(init).is_dir():
        raise C.TrainingConfigError(f"init_adapter: no adapter folder at {init}")
    model, proc = models.load(model_path, adapter=init or None, trainable=bool(init),
                              dtype=cfg.get("dtype", "float32"))
    section = dict(cfg.get("sft", {}))
    if "chat_template_path" not in section and section.get("assistant_only_loss", True):
        tpl = training_template(proc, list(train_ds))
        if tpl:
            section["chat_template_path"] = tpl
    args = C.trl_args(SFTConfig, {"assistant_only_loss": True, "report_to": "none", **section},
                      output_dir=str(out))
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                         processing_class=proc,
                         peft_config=None if init else lora_config(cfg.get("lora", {})))
    resume = cfg.get("resume", "auto")
    ckpt = last_checkpoint(out) if resume == "auto" else (resume or None)
    t0 = time.time()
    result = trainer.train(resume_from_checkpoint=ckpt)
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    save_processing(model_path, adapter)
    C.write_run_report(out, trainer, t0, stage="sft", model=model_path, train_rows=len(train_ds),
                       train_loss=result.training_loss, resumed_from=ckpt, init_adapter=init)
    return adapter


def main(argv: list[str] | None = None) -> int:
    return C.stage_main(train, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    raise SystemExit(main())
