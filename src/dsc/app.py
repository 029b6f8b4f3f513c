"""The entry point's body: validate, build the components from config, run the stages.

stage=sample → chains into the sample store; stage=distill → (samples if missing) + training;
stage=evaluate → evaluate a trained run (run_dir=<run>); stage=all → the whole dSC method.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dsc import tracking
from dsc.errors import DscError
from dsc.schema import validate


def _evaluate_existing(cfg: DictConfig) -> DictConfig:
    """stage=evaluate on a finished run: its own config decides task, model, reward and sampler."""
    from dsc.distillation import saved_config

    run_dir = Path(cfg.run_dir)
    saved = saved_config(run_dir)
    if saved is None:
        raise DscError(f"run_dir={run_dir} has no config.yaml; point run_dir at a folder made by python -m dsc")
    if not any(run_dir.glob("samples.jsonl")) and not (run_dir / "adapter").exists():
        raise DscError(f"run_dir={run_dir} has no samples and no adapter; run python -m dsc stage=all there first")
    merged = OmegaConf.merge(rebased(saved, run_dir), {"stage": "evaluate", "eval": cfg.eval, "run_dir": str(run_dir)})
    return merged


def rebased(saved: DictConfig, run_dir: Path) -> DictConfig:
    """A saved config holds absolute paths under the run's folder at the time (logger, checkpoints); a
    run that was moved or copied since must log and write under its new folder, not the old one."""
    old = str(saved.get("run_dir") or "")
    if not old or old == str(run_dir):
        return saved

    def move(value):
        if isinstance(value, dict):
            return {k: move(v) for k, v in value.items()}
        if isinstance(value, list):
            return [move(v) for v in value]
        if isinstance(value, str) and (value == old or value.startswith(old.rstrip("/") + "/")):
            return str(run_dir) + value[len(old.rstrip("/")):]
        return value

    return OmegaConf.create(move(OmegaConf.to_container(saved)))


def run(cfg: DictConfig) -> dict:
    if cfg.stage == "evaluate":
        cfg = _evaluate_existing(cfg)
    validate(cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if cfg.stage != "evaluate":
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    logger = instantiate(cfg.logger) if cfg.logger.get("_target_") else None  # before any model: bad logger.mode fails fast
    tracking.log_config(logger, cfg)
    backend = instantiate(cfg.sampler.backend)
    reward = instantiate(cfg.reward)
    acceptance = instantiate(cfg.acceptance)
    results: dict = {}
    chain_backend = None
    if cfg.stage == "sample":
        from dsc.sampling import run_sampling

        results["sampling"] = run_sampling(cfg, run_dir, backend, reward, acceptance)[1]
    if cfg.stage in ("distill", "all"):
        from dsc.distillation import run_distillation

        from dsc.distillation import evaluation_backend

        module, trainer, results["sampling"] = run_distillation(cfg, run_dir, backend, reward, acceptance, logger)
        if not trainer.is_global_zero:
            return results
        backend, chain_backend = evaluation_backend(cfg, backend, module)
        tracking.log_adapter(logger, run_dir)
    tracking.log_sampling(logger, run_dir, results.get("sampling"))
    if cfg.stage == "evaluate":
        from dsc.distillation import evaluation_backend

        backend, chain_backend = evaluation_backend(cfg, backend, run_dir=run_dir)
    if cfg.stage in ("evaluate", "all"):
        from dsc.evaluation.evaluate import run_evaluation

        results["evaluation"] = run_evaluation(cfg, run_dir, backend, reward, acceptance, chain_backend)
        tracking.log_evaluation(logger, run_dir, results["evaluation"])
    (run_dir / "run_results.json").write_text(json.dumps(results, indent=2, default=str))
    tracking.finish(logger)
    return results
