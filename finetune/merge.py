"""Merge a LoRA adapter into its base model: a full model folder vLLM (or any
transformers loader) can serve without PEFT.

    facereason train merge --adapter models/facereason-smollm2-lora --out out/merged
    vllm serve out/merged --dtype float32          # or: --enable-lora with the adapter
"""

from __future__ import annotations

import json
from pathlib import Path

import tools  # noqa: F401  (torchvision workaround before transformers/peft)
from finetune.config import TrainingConfigError


def base_of(adapter: str | Path) -> str:
    """The base model an adapter was trained on (its adapter_config.json), resolved."""
    from agent.backends import resolve_model

    cfg_file = Path(adapter) / "adapter_config.json"
    if not cfg_file.is_file():
        raise TrainingConfigError(f"{adapter} is not a PEFT adapter folder (no adapter_config.json)")
    base = json.loads(cfg_file.read_text()).get("base_model_name_or_path")
    if base and Path(base).exists():
        return base
    # Trained elsewhere (another cache path): the project's default model by name.
    return resolve_model(None)


def merge(adapter: str | Path, out: str | Path, base: str | None = None, dtype: str = "float32") -> Path:
    """Write base + adapter as one safetensors model folder with tokenizer and a
    generation config that stops at the chat turn's end."""
    from peft import PeftModel

    from finetune.sft import is_vlm, load_model, save_processing

    base_path = base or base_of(adapter)
    vlm = is_vlm(base_path)
    model, _ = load_model(base_path, vlm, dtype)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out), safe_serialization=True)
    save_processing(base_path, vlm, out)
    return out
