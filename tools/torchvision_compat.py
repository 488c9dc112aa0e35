"""Make torchvision's Python parts importable when its compiled ops cannot load.

Why this exists: there is no CPU build of torchvision on the package
registries. The build that matches torch 2.13.0 is a CUDA one; beside CPU
torch its `_C` extension fails to load, and then `import torchvision` dies in
`torchvision/_meta_registrations.py` with "operator torchvision::nms does not
exist" (it registers fake kernels for `nms`/`qnms` unconditionally, while every
other op is guarded by `_has_ops()`). That breaks more than torchvision:
open_clip imports it unconditionally, and transformers, once it sees the
package installed, imports it from its vision code, which `import peft` and
`from trl import SFTTrainer` reach. See ../shared/ENVIRONMENT.md.

`ensure()` defines the two schemas `torchvision::nms` and `torchvision::qnms`
with `torch.library`, and only when torchvision is installed and its compiled
ops are missing. torchvision's Python parts (transforms, models, the pieces
open_clip and transformers use) then import and work. The compiled ops stay
unavailable: calling `torchvision.ops.nms` raises torchvision's own "Couldn't
load custom C++ ops" error, and calling `torch.ops.torchvision.nms` directly
raises the error below instead of failing somewhere obscure. Where
torchvision's ops do load (a matching build, e.g. on a GPU machine), `ensure()`
does nothing.

Call `ensure()` before importing torchvision, open_clip, timm, peft, trl or
transformers' vision parts. It is idempotent and cheap.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

import torch

# Schemas as torchvision's C++ code declares them (torchvision/csrc/ops/nms.cpp, qnms).
_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}

# The Library object must stay alive: torch removes its registrations when it is collected.
_LIB: torch.library.Library | None = None
_STATE: str | None = None  # None: not decided yet; else a word for status()


def _schema_exists(name: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(f"torchvision::{name}", "")
        return True
    except RuntimeError:
        return False


def _try_load_compiled_ops() -> bool:
    """Load torchvision's `_C` library the way torchvision itself does, without importing it."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return False
    pkg = Path(next(iter(spec.submodule_search_locations)))
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        lib = pkg / f"_C{suffix}"
        if lib.exists():
            try:
                torch.ops.load_library(str(lib))
            except (OSError, RuntimeError, ImportError):
                return False
            return _schema_exists("nms")
    return False


def _unavailable(name: str):
    def kernel(*args, **kwargs):
        raise RuntimeError(
            f"torchvision::{name} is unavailable: torchvision's compiled ops do not load in "
            "this environment (a CUDA torchvision build beside CPU torch). FaceReason only "
            "uses torchvision's Python parts; install a torchvision build that matches your "
            "torch to use its ops."
        )

    return kernel


def ensure() -> str:
    """Make `import torchvision` work; returns what was done.

    Returns "native" (the compiled ops load), "absent" (torchvision is not
    installed: nothing to do) or "stubbed" (the schemas were registered and the
    ops raise a clear error when called). Safe to call many times.
    """
    global _LIB, _STATE
    if _STATE is not None:
        return _STATE
    if "torchvision" in sys.modules and hasattr(sys.modules["torchvision"], "__version__"):
        # Already imported successfully: by another route or by a matching build.
        _STATE = "native" if _schema_exists("nms") else "stubbed"
        return _STATE
    if importlib.util.find_spec("torchvision") is None:
        _STATE = "absent"
        return _STATE
    if _schema_exists("nms") or _try_load_compiled_ops():
        _STATE = "native"
        return _STATE
    lib = torch.library.Library("torchvision", "FRAGMENT")
    for name, schema in _SCHEMAS.items():
        if not _schema_exists(name):
            lib.define(schema)
            lib.impl(name, _unavailable(name), "CompositeExplicitAutograd")
    _LIB = lib
    _STATE = "stubbed"
    return _STATE
