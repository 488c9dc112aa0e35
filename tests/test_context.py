"""Tests for tools.torchvision_compat and tools.context (CLIP context scoring)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


# ------------------------------------------------------------ torchvision_compat
@pytest.mark.slow
def test_torchvision_compat_makes_clip_peft_trl_importable():
    code = """
import json
from tools import torchvision_compat
state = torchvision_compat.ensure()
again = torchvision_compat.ensure()
import open_clip, peft, torch, torchvision
from trl import SFTTrainer
err = None
if state == "stubbed":
    try:
        torch.ops.torchvision.nms(torch.zeros(2, 4), torch.zeros(2), 0.5)
    except RuntimeError as e:
        err = str(e)
print(json.dumps({"state": state, "again": again, "err": err,
                  "trainer": SFTTrainer.__name__, "clip": open_clip.__version__}))
"""
    p = _run(code)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["state"] in {"native", "stubbed"}
    assert out["again"] == out["state"]
    assert out["trainer"] == "SFTTrainer"
    if out["state"] == "stubbed":
        # The stubbed op must fail loudly and say why, not return garbage.
        assert out["err"] and "unavailable" in out["err"] and "torchvision" in out["err"]
        # And the trap is real here: without ensure(), torchvision does not import.
        bare = _run("import torchvision")
        assert bare.returncode != 0 and "torchvision::nms" in bare.stderr
