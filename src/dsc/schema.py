"""Validation of a composed config before any model loads.

Hydra checks structure (unknown keys fail in struct mode); this module checks values and names, and
turns every problem into one DscError line naming the field, the value and the fix. Group choices
(task=…, reward=…) are checked against the YAML files before Hydra composes, so a typo never prints
a stack trace.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from dsc.errors import DscError
from dsc.paths import config_dir, sweeps_dir

STAGES = ("sample", "distill", "evaluate", "all")


def check_group_overrides(argv: list[str]) -> None:
    """One-line errors for unknown config-group options on the command line (task=foo, reward=bar)."""
    root = config_dir()
    for arg in argv:
        match = re.fullmatch(r"[+~]?([A-Za-z_][\w/]*)=(.*)", arg)
        if not match or arg.startswith("hydra"):
            continue
        group, value = match.groups()
        folder = sweeps_dir() if group == "sweep" else root / group
        if not folder.is_dir() or value in ("null", ""):
            continue
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        for choice in _choices(value):
            if choice not in known:
                raise DscError(f"{group}={choice} is not a known {group}; choose one of: {', '.join(known)}")


def _choices(value: str) -> list[str]:
    sweep = re.fullmatch(r"(?:choice|glob)\((.*)\)", value)
    body = sweep.group(1) if sweep else value
    return [v.strip().strip("'\"") for v in body.split(",") if v.strip() and "*" not in v]


def _number(cfg: DictConfig, field: str, kind: type, low: float | None = None, strict: bool = False, fix: str = "") -> Any:
    value = OmegaConf.select(cfg, field)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DscError(f"{field}={value} must be an integer; {fix or f'e.g. {field}=2'}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise DscError(f"{field}={value} must be a number; {fix or f'e.g. {field}=0.5'}")
    if low is not None and (value <= low if strict else value < low):
        bound = f"> {low}" if strict else f">= {low}"
        raise DscError(f"{field}={value} must be {bound}; {fix or 'choose a value in range'}")
    return value


def validate(cfg: DictConfig) -> None:
    if cfg.stage not in STAGES:
        raise DscError(f"stage={cfg.stage} is not a stage; use one of: {', '.join(STAGES)}")
    _number(cfg, "beta", float, 0, strict=True, fix="beta is the reward temperature, e.g. beta=0.5")
    _number(cfg, "seed", int, 0)
    if cfg.get("threads") is not None:
        _number(cfg, "threads", int, 1)
    s = "sampler"
    _number(cfg, f"{s}.num_steps", int, 0, fix="num_steps is the chain length K, e.g. sampler.num_steps=2")
    _number(cfg, f"{s}.num_chains", int, 1, fix="e.g. sampler.num_chains=4")
    _number(cfg, f"{s}.num_prompts", int, 1, fix="e.g. sampler.num_prompts=8")
    _number(cfg, f"{s}.batch_size", int, 1, fix="e.g. sampler.batch_size=32")
    if cfg.sampler.split not in ("train", "validation", "test"):
        raise DscError(f"sampler.split={cfg.sampler.split} is not a split; use train, validation or test")
    for turn in ("proposal", "critique_params", "revision_params"):
        _number(cfg, f"{s}.{turn}.max_new_tokens", int, 1, fix=f"e.g. {s}.{turn}.max_new_tokens=64")
        _number(cfg, f"{s}.{turn}.temperature", float, 0, fix=f"0 is greedy; e.g. {s}.{turn}.temperature=0.8")
        top_p = _number(cfg, f"{s}.{turn}.top_p", float, 0, strict=True, fix=f"e.g. {s}.{turn}.top_p=1.0")
        if top_p > 1:
            raise DscError(f"{s}.{turn}.top_p={top_p} must be in (0, 1]; e.g. {s}.{turn}.top_p=1.0")
    for key in ("critique_request", "revision_request"):
        if not str(cfg.critique.get(key) or "").strip():
            raise DscError(f"critique.{key} is empty; give the instruction text, e.g. in conf/critique/<task>.yaml")
    model = cfg.model
    if not model.get("path") and not model.get("gguf"):
        raise DscError("model.path and model.gguf are both empty; set model.path=<HF folder or hub id> or model.gguf=<file>")
    if model.get("gguf") not in (None, "bundled") and not model.get("path") and not Path(str(model.gguf)).expanduser().exists():
        raise DscError(f"model.gguf={model.gguf} does not exist; give the path of a .gguf file or use model=smollm2_135m")
    if model.get("path") and str(model.path).startswith((".", "/", "~")) and not Path(str(model.path)).expanduser().exists():
        raise DscError(f"model.path={model.path} does not exist; give a Hugging Face model folder or a hub id")
    if cfg.model.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DscError(f"model.device={cfg.model.device} but no CUDA device is visible; use model.device=cpu")
