"""The layout a newcomer reads: no module of the project imports itself back at import time."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["agent", "tools", "finetune", "evals", "server", "prompts"]


def _modules() -> dict[str, Path]:
    mods = {"app": ROOT / "app.py"}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return mods


def _module_level_imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """Project modules `name` imports when it is imported (its top-level statements; an
    import inside a function runs later and cannot close a cycle at import time).
    `from agent import models` depends on agent.models, not on agent/__init__.py's names."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & mods.keys()
            out |= subs
            if len(subs) < len(node.names):
                out.add(node.module)
    return {m for m in out if m in mods and m != name}


def test_no_module_level_import_cycle():
    mods = _modules()
    graph = {m: _module_level_imports(m, p, mods) for m, p in mods.items()}
    cycles: list[list[str]] = []

    def walk(m: str, path: list[str], done: set[str]) -> None:
        for d in sorted(graph[m]):
            if d in path:
                cycles.append(path[path.index(d):] + [d])
            elif d not in done:
                walk(d, path + [d], done)
        done.add(m)

    done: set[str] = set()
    for m in sorted(graph):
        if m not in done:
            walk(m, [m], done)
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles[:5])
