"""JSON Lines files a user hands us (manifests, references, predictions): one reader,
whose error names the file and the line."""

from __future__ import annotations

import json
from typing import Any

from tools.errors import FaceReasonError


def rows(text: str, name: str, code: str | None = None) -> list[Any]:
    """The JSON value of each non-blank line of `text` (the content of file `name`)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FaceReasonError(f"{name}, line {n}: not valid JSON ({exc.msg}).",
                                      code=code) from None
    return out
