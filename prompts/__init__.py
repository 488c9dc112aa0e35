"""Prompt files and a tiny loader.

Every prompt and prompt-like phrase the project sends to a model (or writes as
teacher text) lives here as a file, so it can be read, diffed and tuned without
touching Python. Text prompts use `string.Template` placeholders (`$name` or
`${name}`), which leave JSON braces alone; phrase banks are YAML.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent
_SUFFIXES = (".md", ".txt", ".yaml", ".jinja")


class PromptNotFound(FileNotFoundError):
    """No prompt file of that name exists in prompts/."""


def _find(name: str) -> Path:
    p = ROOT / name
    if p.suffix in _SUFFIXES and p.is_file():
        return p
    for suffix in _SUFFIXES:
        q = ROOT / f"{name}{suffix}"
        if q.is_file():
            return q
    known = sorted(f.name for f in ROOT.iterdir() if f.suffix in _SUFFIXES)
    raise PromptNotFound(f"No prompt named '{name}' in {ROOT}; available: {', '.join(known)}")


@functools.cache
def load(name: str) -> str:
    """The text of prompts/<name>(.md|.txt|.yaml|.jinja), without a trailing newline."""
    return _find(name).read_text(encoding="utf-8").rstrip("\n")


@functools.cache
def load_yaml(name: str) -> Any:
    """A YAML prompt file (phrase banks, tool descriptions) parsed to Python data."""
    return yaml.safe_load(load(name if name.endswith(".yaml") else f"{name}.yaml"))


def render(name: str, **variables: Any) -> str:
    """Fill a text prompt's `$placeholders`; a missing variable raises KeyError naming it."""
    return string.Template(load(name)).substitute(variables)


def fill(template: str, **variables: Any) -> str:
    """Fill one phrase (e.g. taken from a YAML bank) the same way `render` fills a file."""
    return string.Template(template).substitute(variables)
