"""The entry point's body: validate, build the components from config, run the stages."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dsc.schema import validate
from dsc.sampling import run_sampling


def run(cfg: DictConfig) -> dict:
    validate(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    results: dict = {}
    if cfg.stage in ("sample", "all"):
        backend = instantiate(cfg.sampler.backend)
        reward = instantiate(cfg.reward)
        acceptance = instantiate(cfg.acceptance)
        results["sampling"] = run_sampling(cfg, run_dir, backend, reward, acceptance).summary
    return results
