"""Perception: media in, one `Analysis` out.

    from tools import analyze
    analysis = analyze("clip.mp4")

Where things happen: tools/video.py decodes, tools/landmarks.py finds faces,
tools/tracking.py keeps identities, tools/pipeline.py runs it all, and
tools/analysis.py defines the result.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Importing `tools` is cheap (no torch, no MediaPipe): the command line's --help and
# parsers import it. The torchvision workaround (tools/torchvision_compat.py) runs where
# transformers, peft, trl or open_clip are about to load: agent.models.compat().

if TYPE_CHECKING:
    from tools.analysis import Analysis


def analyze(path, **kwargs) -> Analysis:
    """See `tools.pipeline.analyze` (imported lazily: MediaPipe takes a second to load)."""
    from tools.pipeline import analyze as _analyze

    return _analyze(path, **kwargs)


__all__ = ["analyze"]
