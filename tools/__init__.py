"""Perception: media in, one `Analysis` out.

    from tools import analyze
    analysis = analyze("clip.mp4")

Where things happen: tools/video.py decodes, tools/landmarks.py finds faces,
tools/tracking.py keeps identities, tools/pipeline.py runs it all, and
tools/analysis.py defines the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.torchvision_compat import ensure as _ensure_torchvision

# Every FaceReason package imports `tools`, so this one call makes transformers,
# peft, trl and open_clip importable beside the CUDA-only torchvision wheel.
_ensure_torchvision()

if TYPE_CHECKING:
    from tools.analysis import Analysis


def analyze(path, **kwargs) -> Analysis:
    """See `tools.pipeline.analyze` (imported lazily: MediaPipe takes a second to load)."""
    from tools.pipeline import analyze as _analyze

    return _analyze(path, **kwargs)


__all__ = ["analyze"]
