"""A built wheel works on its own: installed into a fresh venv and run from another
directory, `facereason explain` finds its prompts, configs and the shipped LoRA adapter
inside the installed package, not in this source tree.

The fresh venv gets only the wheel (no dependencies); the dependencies come from this
environment's site-packages through PYTHONPATH, which does not process .pth files, so
the source tree's editable install is not on the path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tools.assets import media

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy: setuptools writes build/ and *.egg-info into the tree it builds, and a
    # stale build/lib would leak removed modules into later wheels.
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "out", "runs", "build", "dist", "artifacts", "*.egg-info", "__pycache__",
        ".pytest_cache", ".ruff_cache", ".hypothesis", ".whl", ".gl"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist), str(src)], check=True, cwd=tmp)
    (whl,) = dist.glob("facereason-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
                    str(whl)], check=True)
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"]}
    return whl, venv, env, tmp


def test_the_wheel_carries_the_adapter_and_the_data_files(wheel_venv):
    whl, *_ = wheel_venv
    names = set(zipfile.ZipFile(whl).namelist())
    for needed in ("app.py", "server/page.py", "agent/adapters/facereason-smollm2-lora/adapter_model.safetensors",
                   "agent/adapters/facereason-smollm2-lora/ship.json", "finetune/configs/sft_smollm2.yaml",
                   "finetune/templates/model_card.md", "prompts/emfacs.yaml"):
        assert needed in names, needed


def test_the_installed_wheel_explains_with_the_shipped_adapter(wheel_venv):
    _, venv, env, tmp = wheel_venv
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import agent, app; print(agent.__file__, app.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp, env=env).stdout
    assert str(ROOT) not in where and str(venv) in where, where
    run = subprocess.run([str(venv / "bin" / "facereason"), "explain", str(media("single_face.jpg")),
                          "--backend", "transformers", "--json", "result.json"],
                         capture_output=True, text=True, cwd=tmp, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads((tmp / "result.json").read_text())
    assert out["model"].endswith("+facereason-smollm2-lora"), out["model"]
    assert out["explanations"] and not out["explanations"][0]["fallback_used"], out["explanations"]
