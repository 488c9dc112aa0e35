"""Tiny randomly initialised models of the real architectures, for tests and benchmarks.

Real CLIP weights are not available offline, but every line of the loading
and scoring code runs on these exactly as on the real checkpoints.
"""

from __future__ import annotations

import json
from pathlib import Path

# open_clip's own architecture (vision transformer + text transformer with the
# real BPE tokenizer), as small as it gets.
TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                   "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                 "layers": 1},
}


def tiny_clip(root: Path):
    """Build, save and register a tiny CLIP under root.

    Returns (model, preprocess, folder in open_clip's hub layout, lone weights
    file, architecture name).
    """
    from tools.torchvision_compat import ensure

    ensure()
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg_dir = root / "configs"
    cfg_dir.mkdir()
    (cfg_dir / "FR-tiny-clip.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg_dir)  # what a user with a custom architecture does
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("FR-tiny-clip")
    model.eval()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder = root / "hub_layout"
    folder.mkdir()
    (folder / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": TINY_CFG, "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN),
                                                   "std": list(open_clip.OPENAI_DATASET_STD)}}))
    save_file(state, folder / "open_clip_model.safetensors")
    lone = root / "tiny.safetensors"
    save_file(state, lone)
    return model, preprocess, folder, lone, "FR-tiny-clip"
