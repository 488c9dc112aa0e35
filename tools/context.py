"""Scene context from CLIP: how well a frame matches short text prompts.

A face alone often cannot tell a grimace of effort from one of pain; the scene
(a sports match, a hospital, a funeral) helps the reasoner. `score_context`
compares whole frames with scene prompts and face crops with emotion prompts
(or a user's label set), using an open_clip model, and returns a
`ContextResult` with the averaged softmax scores.

Weights. No CLIP weights travel in any package registry, so there is no
offline default. `load_clip` looks, in order, at:
  1. a local checkpoint: the `checkpoint` argument or `$FACEREASON_CLIP_CHECKPOINT`,
     either a folder in open_clip's hub layout (open_clip_config.json + weights,
     e.g. a downloaded copy of a hub repo) or a weights file for `model`;
  2. the Hugging Face / open_clip cache, for `model` + `pretrained` tag;
  3. the hub, only when `HF_HUB_OFFLINE` is not set and the endpoint answers a
     short connection probe (so an offline machine never waits on timeouts).
With none of these, `score_context` returns status "unavailable" and a
message saying how to get weights; the analysis goes on without context.

The prompts live in prompts/context_prompts.yaml.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import yaml

import prompts
from tools.analysis import ContextResult
from tools.errors import FaceReasonError

PROMPTS_FILE = prompts.ROOT / "context_prompts.yaml"  # the CLIP text prompts


@dataclass(frozen=True)
class ClipChoice:
    """An open_clip architecture name and a pretrained tag from open_clip's table."""

    model: str
    pretrained: str
    note: str = ""


# The default is a widely used CLIP with good zero-shot scene recognition;
# MobileCLIP is about 3x cheaper on CPU at similar zero-shot accuracy
# (Vasu et al., 2024, "MobileCLIP: Fast Image-Text Models through Multi-Modal
# Reinforced Training"). Override with $FACEREASON_CLIP_MODEL / _PRETRAINED.
DEFAULT_CLIP = ClipChoice("ViT-B-32", "laion2b_s34b_b79k", "LAION-2B CLIP ViT-B/32")
ALTERNATIVES = (
    ClipChoice("MobileCLIP-S2", "datacompdr", "Apple MobileCLIP-S2, faster on CPU"),
    ClipChoice("ViT-B-16", "laion2b_s34b_b88k", "LAION-2B CLIP ViT-B/16, slower, more accurate"),
)
CHECKPOINT_ENV = "FACEREASON_CLIP_CHECKPOINT"
PROBE_TIMEOUT_S = 3.0
BATCH = 16


class ContextUnavailable(FaceReasonError):
    """CLIP weights could not be found or loaded; the message says what to do."""

    code = "context_unavailable"


@lru_cache(maxsize=1)
def load_prompts() -> dict:
    """The prompt sets of prompts/context_prompts.yaml."""
    data = yaml.safe_load(PROMPTS_FILE.read_text())
    for key in ("scene", "emotions"):
        if not isinstance(data.get(key), dict) or not data[key]:
            raise FaceReasonError(f"{PROMPTS_FILE} needs a non-empty '{key}' mapping")
    return data


def _how_to(model: str, pretrained: str, hub: str) -> str:
    repo = f"the hub repo {hub.rstrip('/')}" if hub else "the weights file"
    return (
        f"how to get them: on a machine with internet run open_clip once "
        f"(open_clip.create_model_and_transforms('{model}', pretrained='{pretrained}')) "
        f"to fill the Hugging Face cache, or copy {repo} into a folder "
        f"and set {CHECKPOINT_ENV}=/that/folder (a .safetensors/.bin file for {model} works too)"
    )


def weights_found_locally() -> bool:
    """A cheap guess, without importing open_clip (seconds on a small CPU), whether
    `load_clip()` can find weights without the network: a checkpoint is configured,
    or the Hugging Face cache holds some CLIP repository."""
    if os.environ.get(CHECKPOINT_ENV):
        return True
    from huggingface_hub.constants import HF_HUB_CACHE

    cache = Path(HF_HUB_CACHE)
    return cache.is_dir() and any("clip" in d.name.lower() for d in cache.glob("models--*"))


def _hub_reachable() -> bool:
    """True when downloads may be attempted: not offline, and the endpoint answers quickly."""
    import huggingface_hub.constants as hc

    if hc.HF_HUB_OFFLINE:
        return False
    url = urlparse(hc.ENDPOINT)
    try:
        with socket.create_connection(
            (url.hostname or "huggingface.co", url.port or 443), timeout=PROBE_TIMEOUT_S
        ):
            return True
    except OSError:
        return False


def _cached_weights(model: str, pretrained: str) -> str | None:
    """The local file of a pretrained tag, if the hub or open_clip cache holds it."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    hub = cfg.get("hf_hub", "")
    if hub:
        # open_clip's convention: "org/repo/" (default file name) or "org/repo/file".
        repo, filename = os.path.split(hub)
        names = [filename] if filename else []
        names += ["open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                  "open_clip_pytorch_model.bin"]
        for name in names:
            hit = try_to_load_from_cache(repo, name)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit
    url = cfg.get("url", "")
    if url:
        f = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if f.is_file():
            return str(f)
    return None


def _resolve(model: str, pretrained: str, checkpoint: str | None) -> tuple[str, str | None, dict]:
    """open_clip (model_name, pretrained, transform overrides) to load, or ContextUnavailable."""
    import open_clip

    if checkpoint:
        path = Path(checkpoint).expanduser()
        if path.is_dir():
            if not (path / "open_clip_config.json").is_file():
                raise ContextUnavailable(
                    f"CLIP checkpoint folder {path} has no open_clip_config.json "
                    "(expected open_clip's hub layout: open_clip_config.json + weights)"
                )
            return f"local-dir:{path}", None, {}
        if path.is_file():
            if model not in open_clip.list_models():
                raise ContextUnavailable(
                    f"unknown CLIP architecture '{model}' for checkpoint {path}; "
                    f"choose one of open_clip.list_models() or give a folder with open_clip_config.json"
                )
            return model, str(path), {}
        raise ContextUnavailable(f"CLIP checkpoint {path} does not exist")

    if model.startswith(("hf-hub:", "local-dir:")):
        if model.startswith("hf-hub:") and not _hub_reachable():
            raise ContextUnavailable(f"no CLIP weights for {model} (hub unreachable)")
        return model, None, {}
    if model not in open_clip.list_models():
        raise ContextUnavailable(f"unknown CLIP architecture '{model}'")
    cfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model)
        raise ContextUnavailable(f"unknown pretrained tag '{pretrained}' for {model}; known: {tags}")
    # Loading a cached file by path loses the tag's preprocessing, so pass it on.
    overrides = {
        "image_mean": cfg.get("mean"),
        "image_std": cfg.get("std"),
        "image_interpolation": cfg.get("interpolation"),
        "image_resize_mode": cfg.get("resize_mode"),
    }
    cached = _cached_weights(model, pretrained)
    if cached:
        return model, cached, {k: v for k, v in overrides.items() if v is not None}
    if _hub_reachable():
        return model, pretrained, {}
    raise ContextUnavailable(
        f"no CLIP weights ({model}/{pretrained} is neither cached nor downloadable here); "
        + _how_to(model, pretrained, cfg.get("hf_hub", ""))
    )


class ClipScorer:
    """An open_clip model with its preprocessing and tokenizer; scores images against prompts."""

    def __init__(self, model, preprocess, tokenizer, name: str):
        self.model = model.eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.name = name
        self._text_cache: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def encode_images(self, images: list[np.ndarray]) -> np.ndarray:
        """L2-normalised image embeddings, (n, d)."""
        import torch
        from PIL import Image

        pil = [Image.fromarray(_as_rgb(im)) for im in images]
        out = []
        with torch.inference_mode():
            for i in range(0, len(pil), BATCH):
                x = torch.stack([self.preprocess(p) for p in pil[i:i + BATCH]])
                f = self.model.encode_image(x)
                out.append(torch.nn.functional.normalize(f.float(), dim=-1).numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def encode_texts(self, prompts: list[str]) -> np.ndarray:
        """L2-normalised text embeddings, (m, d); each prompt is encoded once per scorer."""
        import torch

        with self._lock:
            todo = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
            if todo:
                with torch.inference_mode():
                    f = self.model.encode_text(self.tokenizer(todo))
                    f = torch.nn.functional.normalize(f.float(), dim=-1).numpy()
                self._text_cache.update(zip(todo, f, strict=True))
            return np.stack([self._text_cache[p] for p in prompts])

    def logit_scale(self) -> float:
        s = getattr(self.model, "logit_scale", None)
        return float(s.detach().exp()) if s is not None else 100.0

    def score(self, images: list[np.ndarray], prompts: list[str]) -> np.ndarray:
        """(n_images, n_prompts) softmax probabilities over the prompts, per image."""
        if not prompts:
            raise FaceReasonError("context scoring needs at least one prompt")
        if not images:
            return np.zeros((0, len(prompts)), np.float32)
        logits = self.logit_scale() * self.encode_images(images) @ self.encode_texts(prompts).T
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _as_rgb(im: np.ndarray) -> np.ndarray:
    a = np.asarray(im)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4) or a.shape[0] < 1 or a.shape[1] < 1:
        raise FaceReasonError(
            f"context scoring expects RGB images of shape (H, W, 3); got shape {a.shape}"
        )
    a = a[:, :, :3]
    if a.dtype != np.uint8:
        scale = 255.0 if a.dtype.kind == "f" and a.max(initial=0) <= 1.0 else 1.0
        a = np.clip(a.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(a)


_SCORERS: dict[tuple, ClipScorer] = {}
_MISSES: dict[tuple, tuple[float, ContextUnavailable]] = {}
MISS_TTL_S = 300.0  # remember "no weights" for a while: each analysis must not re-probe the hub
_LOAD_LOCK = threading.Lock()


def _load(model: str | None, pretrained: str | None, checkpoint: str | None) -> ClipScorer:
    from tools.torchvision_compat import ensure

    ensure()  # open_clip imports torchvision; see tools/torchvision_compat.py
    import open_clip

    model = model or os.environ.get("FACEREASON_CLIP_MODEL") or DEFAULT_CLIP.model
    pretrained = pretrained or os.environ.get("FACEREASON_CLIP_PRETRAINED") or DEFAULT_CLIP.pretrained
    checkpoint = checkpoint or os.environ.get(CHECKPOINT_ENV) or None
    key = (model, pretrained, checkpoint)
    with _LOAD_LOCK:
        if key in _SCORERS:
            return _SCORERS[key]
        miss = _MISSES.get(key)
        if miss and time.monotonic() - miss[0] < MISS_TTL_S:
            raise miss[1]
        try:
            name, weights, overrides = _resolve(model, pretrained, checkpoint)
        except ContextUnavailable as exc:
            if not checkpoint:  # a named file may appear any moment; only the hub probe is slow
                _MISSES[key] = (time.monotonic(), exc)
            raise
        try:
            net, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=weights, **overrides
            )
            tokenizer = open_clip.get_tokenizer(name)
        except Exception as exc:  # a corrupt or mismatched file: say which
            raise ContextUnavailable(
                f"could not load CLIP {name} from {weights or 'its config'}: {exc}"
            ) from exc
        if checkpoint:
            label = f"{model} ({Path(weights).name})" if weights else f"open_clip folder {Path(checkpoint).name}"
        elif name.startswith(("hf-hub:", "local-dir:")):
            label = name
        else:
            label = f"{model}/{pretrained}"
        scorer = ClipScorer(net, preprocess, tokenizer, label)
        _SCORERS[key] = scorer
        return scorer


def load_clip(
    model: str | None = None, pretrained: str | None = None, checkpoint: str | None = None
) -> ClipScorer | None:
    """A CLIP scorer, or None when no weights can be found (offline, nothing cached).

    A checkpoint that was named (argument or $FACEREASON_CLIP_CHECKPOINT) but is
    missing or unreadable raises ContextUnavailable with the reason, since the
    user asked for it. Loaded scorers are cached per (model, pretrained, checkpoint).
    """
    try:
        return _load(model, pretrained, checkpoint)
    except ContextUnavailable:
        if checkpoint or os.environ.get(CHECKPOINT_ENV):
            raise
        return None


def _label_prompts(label_set: list[str]) -> dict[str, str]:
    template = load_prompts().get("label_template", "a photo of a face showing {label}")
    out: dict[str, str] = {}
    for item in label_set:
        if not isinstance(item, str) or not item.strip():
            raise FaceReasonError(f"label set entries must be non-empty strings; got {item!r}")
        label, sep, desc = item.partition(":")
        label = label.strip()
        out[label] = desc.strip() if sep and desc.strip() else template.format(label=label)
    return out


def _mean_scores(scorer: ClipScorer, images: list[np.ndarray], prompts: dict[str, str],
                 top: int | None = None) -> dict[str, float]:
    if not images:
        return {}
    p = scorer.score(images, list(prompts.values())).mean(axis=0)
    order = np.argsort(-p, kind="stable")[:top]
    labels = list(prompts)
    return {labels[i]: round(float(p[i]), 4) for i in order}


def score_context(
    scene_frames: list[np.ndarray],
    face_crops: list[np.ndarray],
    scorer: ClipScorer | None = None,
    label_set: list[str] | None = None,
) -> ContextResult:
    """Scene prompts on whole frames, emotion (or `label_set`) prompts on face crops.

    Probabilities are a softmax over each prompt set per image, averaged over
    the images; `scene` keeps the `top_scene` most likely settings, `face` all
    labels, both sorted by score. Without weights the result says "unavailable"
    and how to get them instead of failing.
    """
    if scorer is None:
        try:
            scorer = _load(None, None, None)
        except ContextUnavailable as exc:
            return ContextResult(status="unavailable", message=f"context: unavailable ({exc})")
    if not scene_frames and not face_crops:
        return ContextResult(status="unavailable", model=scorer.name,
                             message="context: unavailable (no frames to score)")
    prompts = load_prompts()
    face_prompts = _label_prompts(label_set) if label_set else dict(prompts["emotions"])
    scene = _mean_scores(scorer, list(scene_frames), dict(prompts["scene"]),
                         top=int(prompts.get("top_scene", 5)))
    face = _mean_scores(scorer, list(face_crops), face_prompts)
    parts = []
    if scene:
        parts.append("scene: " + ", ".join(f"{k} {v:.2f}" for k, v in list(scene.items())[:3]))
    if face:
        parts.append("face: " + ", ".join(f"{k} {v:.2f}" for k, v in list(face.items())[:3]))
    return ContextResult(status="ok", model=scorer.name, scene=scene, face=face,
                         message=f"context ({scorer.name}): " + "; ".join(parts))
