"""Perception: media in, one `Analysis` out.

    from tools import analyze
    analysis = analyze("clip.mp4")

Where things happen: tools/video.py decodes, tools/landmarks.py finds faces,
tools/tracking.py keeps identities, tools/pipeline.py runs it all, and
tools/analysis.py defines the result.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
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


# Modules of tools/ that do not change what a measurement is (I/O around it, plots, the CLI).
_NOT_MEASUREMENT = {"__init__.py", "assets.py", "commands.py", "errors.py", "files.py", "plots.py",
                    "summary.py", "torchvision_compat.py"}


@functools.cache
def measurement_fingerprint() -> str:
    """12 hex digits that change whenever the code or tables that turn pixels into an
    Analysis change: every perception module of tools/, the EMFACS table and the label
    sets. Caches of analyses (training features, batch reruns) carry it in their key, so
    a measurement change is never answered from a stale file."""
    import prompts

    here = Path(__file__).resolve().parent
    files = [f for f in sorted(here.glob("*.py")) if f.name not in _NOT_MEASUREMENT]
    files += [prompts.ROOT / "emfacs.yaml", *sorted((prompts.ROOT / "labelsets").glob("*.yaml"))]
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:12]


__all__ = ["analyze", "measurement_fingerprint"]
