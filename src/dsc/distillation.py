"""The distillation stage: DataModule (samples the store if needed) + DistillModule + Lightning Trainer.

The run folder gets ``adapter/`` (peft adapter, rank 0), ``checkpoints/`` (adapter + optimizer +
step, for resume) and ``train_metrics.json``. Rerunning the same command in the same run folder, or
``resume=true``, continues from ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dsc.distill.datamodule import DSCDataModule
from dsc.distill.examples import default_target
from dsc.sampling import collect, sample_shard, train_prompts
from dsc.summary import format_summary


def build_trainer(cfg: DictConfig, run_dir: Path, logger=None):
    return instantiate(cfg.trainer, default_root_dir=str(run_dir), logger=logger if logger is not None else False)


def resume_checkpoint(cfg: DictConfig, run_dir: Path) -> str | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    if last.exists() and cfg.get("resume", True):
        return str(last)
    return None


def run_distillation(cfg: DictConfig, run_dir: Path, backend, reward, acceptance, logger=None):
    """Returns (DistillModule, trainer); the module's model is the trained student (peft)."""
    divergence = instantiate(cfg.divergence)
    prompts = train_prompts(cfg, run_dir)
    target = cfg.distill.target or default_target(acceptance.name)
    state = {"sampling_seconds": 0.0}

    def shard(rank: int, world: int) -> None:
        started = time.perf_counter()
        sample_shard(cfg, run_dir, backend, reward, acceptance, prompts, rank=rank, world_size=world)
        state["sampling_seconds"] = time.perf_counter() - started
        if hasattr(backend, "release"):
            backend.release()  # a GPU engine (vLLM) frees its memory before training starts

    def records():
        recs, summary = collect(cfg, run_dir, backend.model_id, prompts, seconds=state["sampling_seconds"])
        print(format_summary(summary))
        state["sampling"] = summary
        return recs

    model, tokenizer = student(cfg, backend)
    datamodule = DSCDataModule(
        tokenizer=tokenizer, divergence=divergence, sample_shard=shard, load_records=records,
        train_prompts=lambda: prompts, target=target, beta=cfg.beta, batch_size=cfg.distill.batch_size,
        max_length=cfg.distill.max_length, seed=cfg.seed)
    module = instantiate(cfg.distill.module, model=model, tokenizer=tokenizer,
                         divergence=divergence, reward=reward, seed=cfg.seed, max_length=cfg.distill.max_length,
                         _convert_="all")
    trainer = build_trainer(cfg, run_dir, logger)
    started = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, run_dir), weights_only=True)
    seconds = time.perf_counter() - started - state["sampling_seconds"]
    write_rank_state(run_dir, trainer, module, datamodule)
    if trainer.is_global_zero:
        module.model.save_pretrained(run_dir / "adapter")
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        metrics.update({"train_seconds": seconds, "global_step": trainer.global_step, "target": target,
                        "divergence": divergence.name, "train_examples": len(datamodule.items)})
        (run_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2))
        print(f"── distillation: {divergence.name}, {len(datamodule.items)} examples, {trainer.global_step} steps, "
              f"{seconds:.0f} s, final loss {metrics.get('train/loss', float('nan')):.4f}")
    return module, trainer, state.get("sampling")


def write_rank_state(run_dir: Path, trainer, module, datamodule) -> None:
    """Per-rank fingerprint of what was trained: under DDP every rank must hold identical weights
    after each optimizer step, and must have seen the same merged training set."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(module.trainable_state().items()):
        digest.update(name.encode())
        digest.update(tensor.float().cpu().numpy().tobytes())
    items = sorted(json.dumps(getattr(i, "__dict__", i), sort_keys=True, default=str) for i in datamodule.items)
    state = {"rank": trainer.global_rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
             "trainable_sha256": digest.hexdigest(), "train_items": len(items),
             "train_items_sha256": hashlib.sha256("\n".join(items).encode()).hexdigest()}
    (run_dir / f"train_state.rank{trainer.global_rank}.json").write_text(json.dumps(state, indent=2))


def student(cfg: DictConfig, backend):
    """The model to train: the HF backend's own model (one copy in memory), or — for engines that hold
    no trainable model (vLLM, servers) or under transfer (the teacher samples, ``model`` is the
    student) — loaded on the CPU; Lightning moves it to the rank's device after sampling has released
    the GPU."""
    transfer = cfg.get("teacher") is not None
    if not transfer and hasattr(backend, "model") and hasattr(backend, "tokenizer"):
        return backend.model, backend.tokenizer
    from dsc.models import ModelSpec, load_model

    spec = ModelSpec(**{**OmegaConf.to_container(cfg.model, resolve=True), "device": "cpu"})
    model, tokenizer, _ = load_model(spec)
    return model, tokenizer


def evaluation_backend(cfg: DictConfig, backend, module=None, run_dir: Path | None = None):
    """(backend generating with the trained student — adapters on, off inside ``adapters_off`` —,
    backend whose chain is the ``chain`` arm: the teacher under transfer, else None = the student's base).
    The student is the trained ``module`` (stage=all) or its base model plus ``run_dir``'s adapter
    (stage=evaluate). Under transfer the sampler's ``backend`` is the teacher, never the student."""
    from dsc.backends.hf import HFBackend

    transfer = cfg.get("teacher") is not None
    holds_student = not transfer and isinstance(backend, HFBackend)
    teacher = backend if transfer and isinstance(backend, HFBackend) else None
    if module is None:
        student_backend = backend if holds_student else HFBackend(model=OmegaConf.to_container(cfg.model, resolve=True))
        return load_adapter(student_backend, run_dir), teacher
    if holds_student:
        backend.model = module.model
        return backend, None
    return HFBackend(model=None, loaded=(module.model.eval(), module.tokenizer, f"student:{cfg.model.name}")), teacher


def load_adapter(backend, run_dir: Path):
    """Wrap the backend's base model with the run's trained adapter (for stage=evaluate)."""
    from peft import PeftModel

    from dsc.errors import DscError

    adapter = run_dir / "adapter"
    if not (adapter / "adapter_config.json").exists():
        raise DscError(f"run_dir={run_dir} has no trained adapter (adapter/adapter_config.json); run stage=distill or stage=all first")
    backend.model = PeftModel.from_pretrained(backend.model, adapter).eval()
    return backend


def saved_config(run_dir: Path) -> DictConfig | None:
    path = run_dir / "config.yaml"
    return OmegaConf.load(path) if path.exists() else None
