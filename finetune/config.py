"""YAML training configs: read, check, and apply command-line overrides.

A config is a small YAML mapping (see finetune/configs/); trainer settings go
straight into TRL's own config dataclasses (SFTConfig, GRPOConfig) and PEFT's
LoraConfig, so every option those libraries document works here unchanged.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tools.errors import FaceReasonError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class TrainingConfigError(FaceReasonError):
    """A training config that is missing, unreadable or names unknown settings."""

    code = "bad_training_config"


def resolve_path(name: str | Path) -> Path:
    """A config path, or the name of one in finetune/configs/ (with or without .yaml)."""
    p = Path(name)
    for cand in (p, CONFIG_DIR / p, CONFIG_DIR / f"{p}.yaml"):
        if cand.is_file():
            return cand
    known = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.yaml")))
    raise TrainingConfigError(f"no training config {name}; give a YAML file or one of: {known}")


def _set(cfg: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    d = cfg
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise TrainingConfigError(f"override {dotted}: {k} is not a section")
    d[keys[-1]] = value


def load(name: str | Path | dict, overrides: list[str] | dict | None = None) -> dict:
    """The config as a dict, with `key.sub=value` overrides (values parsed as YAML)."""
    if isinstance(name, dict):
        cfg = copy.deepcopy(name)
    else:
        path = resolve_path(name)
        try:
            cfg = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise TrainingConfigError(f"{path} is not valid YAML: {exc}") from None
        if not isinstance(cfg, dict):
            raise TrainingConfigError(f"{path} must hold a mapping of settings")
        cfg.setdefault("_path", str(path))
    items = overrides.items() if isinstance(overrides, dict) else (
        (o.split("=", 1) if "=" in o else (o, None)) for o in overrides or [])
    for key, value in items:
        if value is None:
            raise TrainingConfigError(f"override {key!r} must look like key=value")
        _set(cfg, key, _value(value) if isinstance(value, str) else value)
    return cfg


def _value(text: str) -> Any:
    """An override's value parsed as YAML, except that "1e-4" is the number people mean
    (YAML 1.1 reads a float only with a dot, "1.0e-4", and a learning rate of "1e-4"
    reached the optimizer as a string)."""
    v = yaml.safe_load(text)
    if isinstance(v, str):
        try:
            return float(v) if v.strip().lower() not in ("nan", "inf", "-inf", "infinity") else v
        except ValueError:
            return v
    return v


def trl_args(cls, section: dict, **fixed: Any):
    """Build a TRL/transformers config dataclass, naming any unknown option clearly."""
    import dataclasses

    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - known)
    if unknown:
        raise TrainingConfigError(f"unknown {cls.__name__} option(s): {', '.join(unknown)}")
    return cls(**{**section, **fixed})


def write_run_report(out: Path, trainer: Any, t0: float, **fields: Any) -> None:
    """out/log_history.json: what a stage did (steps, wall time, TRL's log history)."""
    report = {**fields, "steps": trainer.state.global_step, "wall_s": round(time.time() - t0, 1),
              "log_history": trainer.state.log_history}
    (Path(out) / "log_history.json").write_text(json.dumps(report, indent=1))


def stage_main(train: Callable[[str, list[str]], Path], description: str,
               argv: list[str] | None = None) -> int:
    """`python -m finetune.<stage> --config NAME [key.sub=value ...]`."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True)
    p.add_argument("overrides", nargs="*", help="key.sub=value settings that replace the config's")
    a = p.parse_args(argv)
    print(train(a.config, a.overrides))
    return 0
