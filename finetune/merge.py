"""Merge a LoRA adapter into its base model: a full model folder vLLM (or any
transformers loader) can serve without PEFT.

    facereason train merge --adapter agent/adapters/facereason-smollm2-lora --out out/merged
    vllm serve out/merged --dtype float32          # or: --enable-lora with the adapter
"""

from __future__ import annotations

import json
from pathlib import Path

from agent import models
from finetune.config import TrainingConfigError


def base_of(adapter: str | Path) -> str:
    """The base model an adapter was trained on (its adapter_config.json), resolved."""
    cfg_file = Path(adapter) / "adapter_config.json"
    if not cfg_file.is_file():
        raise TrainingConfigError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
    if base and Path(base).exists():
        return base
    # Trained elsewhere (another cache path): the project's default model by name.
    return models.resolve_model(None)


def merge(adapter: str | Path, out: str | Path, base: str | None = None, dtype: str = "float32") -> Path:
    """Write base + adapter as one safetensors model folder with tokenizer and a
    generation config that stops at the chat turn's end."""
    from finetune.sft import save_processing

    base_path = base or base_of(adapter)
    merged, _ = models.load(base_path, adapter=str(adapter), dtype=dtype, merge=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    save_processing(base_path, out)
    return out
