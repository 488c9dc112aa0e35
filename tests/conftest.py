"""Shared fixtures: real media from the asset registry, analysed once per session."""

from __future__ import annotations

import os

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402

from tools import assets  # noqa: E402
from tools.torchvision_compat import ensure  # noqa: E402

# Tests import transformers, peft and trl directly, as the programs do only after
# agent.models.compat(): the torchvision workaround first (tools/torchvision_compat.py).
ensure()


@pytest.fixture(scope="session")
def media():
    """media("single_face.mp4") -> Path of a real test file (fetched by `make setup`)."""
    return assets.media


@pytest.fixture(scope="session")
def analyses():
    """Analyses of the real media, computed once and shared by every test."""
    from tools.pipeline import analyze

    cache = {}

    def get(name: str, **kwargs):
        key = (name, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = analyze(assets.media(name), **kwargs)
        return cache[key]

    return get
