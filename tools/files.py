"""Files a user hands us and files we hand back: JSON Lines read with an error that names
the file and the line, and a write no reader ever sees half of."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from tools.errors import FaceReasonError


def jsonl_rows(text: str, name: str, code: str | None = None) -> list[Any]:
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


def write_atomic(path: Path, text: str) -> None:
    """A reader sees the old file or the new one, never half of one (the temp file is beside
    it, so os.replace is a rename; unlike mkstemp's, it gets the usual permissions)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
