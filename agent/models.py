"""One factory for reasoner models, at run time and in training alike.

    net, processor = models.load(models.resolve_model(None), adapter=..., merge=True)

- `resolve_model`: an asset name (`smollm2-135m`, the default), a local folder
  or a hub id -> what `from_pretrained` takes.
- `resolve_adapter`: an explicit PEFT adapter, else `$FACEREASON_ADAPTER`, else
  the project's shipped adapter (agent/adapters/facereason-smollm2-lora) for the
  default model; "none" turns it off.
- `is_vlm`: the one test of "is this an image-text-to-text model?" (its config
  type is in transformers' image-text-to-text mapping).
- `load`: the model and its tokenizer (or multimodal processor), an adapter
  on top (merged into the weights for inference: decoding with an unmerged
  LoRA was 16% slower here), trainable when asked. The shipped adapter's
  merged weights are kept under the cache after the first merge
  (`merged_cache`), so a later start loads them without importing peft.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tools.errors import FaceReasonError

DEFAULT_MODEL = "smollm2-135m"
# The shipped fine-tuned adapter; used by default with the default model when present.
DEFAULT_ADAPTER = Path(__file__).resolve().parent / "adapters" / "facereason-smollm2-lora"  # package data
ENV_ADAPTER = "FACEREASON_ADAPTER"


class ModelError(FaceReasonError):
    """A model or adapter that cannot be found or loaded."""

    code = "backend_error"
    http_status = 502


def compat() -> None:
    """CUDA torchvision beside CPU torch breaks transformers' vision imports, peft and trl
    (ENVIRONMENT.md); tools/torchvision_compat.py explains the workaround."""
    from tools.torchvision_compat import ensure

    ensure()


def is_default(model: str | os.PathLike | None) -> bool:
    return model is None or str(model) in (DEFAULT_MODEL, "default")


def resolve_model(model: str | os.PathLike | None) -> str:
    """An asset name, a local folder or a hub id -> what from_pretrained takes."""
    from tools import assets

    if is_default(model):
        return str(assets.model_dir())
    p = Path(model).expanduser()
    if p.exists():
        return str(p)
    if str(model).startswith((".", "/", "~")):
        raise ModelError(f"model folder {model} does not exist")
    return str(model)


def _verdict() -> dict:
    """The shipped adapter's ship.json (written by `facereason train ship`), {} without one."""
    try:
        return json.loads((DEFAULT_ADAPTER / "ship.json").read_text())
    except (OSError, ValueError):
        return {}


def ships_as_default() -> bool:
    """Whether the project's adapter is shipped and passed the ship rule (its ship.json,
    written by `facereason train ship`); an opt-in adapter is used only when asked for."""
    return bool(_verdict().get("default"))


def chat_ships_as_default() -> bool:
    """Whether the shipped adapter also answers follow-up questions by default: it passed the
    chat's own rule (finetune.followups.chat_check: at or above the rules on the held-out
    and the real follow-ups), or $FACEREASON_ADAPTER names an adapter."""
    if os.environ.get(ENV_ADAPTER, "").lower() not in ("", "none"):
        return True
    v = _verdict()
    return bool(v.get("default") and v.get("chat"))


def resolve_adapter(model: str | os.PathLike | None, adapter: str | os.PathLike | None) -> str | None:
    """Explicit adapter, else $FACEREASON_ADAPTER, else the project's own when it exists
    (only for the default model). "none" turns the default off."""
    if adapter is not None:
        if str(adapter).lower() == "none":
            return None
        p = Path(adapter).expanduser()
        if not (p / "adapter_config.json").exists():
            raise ModelError(f"adapter {adapter} is not a PEFT adapter folder (no adapter_config.json)")
        return str(p)
    if os.environ.get(ENV_ADAPTER):
        return resolve_adapter(model, os.environ[ENV_ADAPTER])
    if is_default(model) and (DEFAULT_ADAPTER / "adapter_config.json").exists():
        return str(DEFAULT_ADAPTER)
    return None


@functools.cache
def is_vlm(model_path: str) -> bool:
    """True for an image-text-to-text model (Qwen2-VL, Qwen2.5-VL, LLaVA, ...)."""
    compat()
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(model_path)
    except OSError as exc:
        hint = " (no model hub is reachable here: pass a local folder)" if not Path(model_path).exists() else ""
        raise ModelError(f"could not load model '{model_path}'{hint}: {exc}") from None
    return config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES


def load_processor(model_path: str) -> Any:
    """The tokenizer, or the multimodal processor of a VLM."""
    compat()
    from transformers import AutoProcessor, AutoTokenizer

    return (AutoProcessor if is_vlm(model_path) else AutoTokenizer).from_pretrained(model_path)


def merged_cache(model_path: str, adapter: str | None, dtype: str) -> Path | None:
    """Where the shipped adapter merged into `model_path` is kept (fp32, inference only).

    Merging costs peft's import and the merge, ~4 s of each cold start here; loading the
    merged safetensors costs ~0.4 s. Only the shipped adapter is kept (the key hashes its
    weights and the base path, so a new adapter or base gets a new folder); any other
    adapter is merged each time, and a training run never reads the cache."""
    if not adapter or dtype != "float32" or Path(adapter).resolve() != DEFAULT_ADAPTER.resolve():
        return None
    weights = DEFAULT_ADAPTER / "adapter_model.safetensors"
    if not weights.is_file():
        return None
    from tools import assets

    key = hashlib.sha256(weights.read_bytes() + str(Path(model_path).resolve()).encode()).hexdigest()[:12]
    return assets.home() / "models" / f"{Path(model_path).name}+{DEFAULT_ADAPTER.name}-{key}"


def _keep_merged(net: Any, where: Path) -> None:
    """Save merged weights for the next start; a cache that cannot be written is skipped."""
    tmp = where.with_name(f"{where.name}.partial-{os.getpid()}")  # one per process
    try:
        for old in where.parent.glob(where.name.rsplit("-", 1)[0] + "-*"):  # an earlier shipped adapter
            if not old.name.startswith(where.name):
                shutil.rmtree(old, ignore_errors=True)
        net.save_pretrained(tmp)
        tmp.rename(where)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def load(model_path: str, *, adapter: str | None = None, dtype: str = "float32",
         device: str | None = None, merge: bool = False, trainable: bool = False) -> tuple[Any, Any]:
    """(model, processor) for a resolved model path, with an optional PEFT adapter.

    merge: fold the adapter into the weights (inference). trainable: keep the adapter's
    weights trainable (GRPO continuing an SFT adapter)."""
    compat()
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a "Loading weights" bar means nothing to a user
    cls = AutoModelForImageTextToText if is_vlm(model_path) else AutoModelForCausalLM
    kept = merged_cache(model_path, adapter, dtype) if merge and not trainable else None
    ready = kept is not None and (kept / "model.safetensors").is_file()
    try:
        net = cls.from_pretrained(str(kept) if ready else model_path, dtype=getattr(torch, dtype))
        proc = load_processor(model_path)
    except OSError as exc:
        hint = " (no model hub is reachable here: pass a local folder)" if not Path(model_path).exists() else ""
        raise ModelError(f"could not load model '{model_path}'{hint}: {exc}") from None
    if adapter and not ready:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, adapter, is_trainable=trainable)
        if merge:
            net = net.merge_and_unload()
            if kept is not None:
                _keep_merged(net, kept)
    if device:
        net.to(device)
    return net, proc
