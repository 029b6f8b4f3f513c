"""The sampling stage: pick the prompts, find (or create) the content-addressed sample store, run the
chains that are missing, and leave this run's records and summary in the run folder.

A store is identified by everything that determines a chain's content — model identity and weights
hash, prompt source, critique prompts, per-turn sampling params, reward, acceptance (β included) and
seed — and nothing else: not the number of prompts, chains or steps (a store grows; a shorter run
reads a prefix of a longer one), not the divergence, not the logger. Reruns and sweep jobs that
differ only downstream share it; a writer holds its shard's lock, a second one waits.

Ranks: rank r samples prompts[r::world] into shard r; after a barrier any rank reads the merged store.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dsc.prompts import save_prompts, select
from dsc.records import ChainStep, Prompt
from dsc.store import SampleStore
from dsc.summary import format_summary, summarise


def load_prompt_set(cfg: DictConfig) -> list[Prompt]:
    return instantiate(cfg.task.prompts).load()


def train_prompts(cfg: DictConfig, run_dir: Path | None = None) -> list[Prompt]:
    """The run's sampling prompts (a seeded, prefix-stable selection); the full set is saved with the run."""
    prompts = load_prompt_set(cfg)
    if run_dir is not None:
        save_prompts(prompts, run_dir / "prompts.jsonl")
    return select(prompts, cfg.sampler.split, cfg.sampler.num_prompts, cfg.seed)


def store_key(cfg: DictConfig, model_id: str) -> str:
    container = lambda node: OmegaConf.to_container(node, resolve=True)  # noqa: E731
    sampler = container(cfg.sampler)
    payload = {
        "model": model_id,
        "task": cfg.task.name,
        "prompts": container(cfg.task.prompts),
        "critique": container(cfg.critique),
        "turns": {k: sampler[k] for k in ("proposal", "critique_params", "revision_params")},
        "backend": sampler["backend"].get("_target_"),
        "reward": container(cfg.reward),
        "acceptance": container(cfg.acceptance),
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def open_store(cfg: DictConfig, model_id: str, shard: int = 0) -> SampleStore:
    return SampleStore(Path(cfg.samples_root) / f"{cfg.task.name}-{store_key(cfg, model_id)}", shard=shard)


def wanted(records: list[ChainStep], prompts: list[Prompt], num_chains: int, num_steps: int) -> list[ChainStep]:
    """This run's slice of a (possibly larger) store, in prompt/chain/step order, without duplicates."""
    order = {p.id: i for i, p in enumerate(prompts)}
    seen: dict[tuple, ChainStep] = {}
    for r in records:
        if r.prompt_id in order and r.chain_id < num_chains and r.step <= num_steps:
            seen.setdefault(r.key, r)
    return sorted(seen.values(), key=lambda r: (order[r.prompt_id], r.chain_id, r.step))


def build_sampler(cfg: DictConfig, backend, reward, acceptance, **overrides):
    return instantiate(cfg.sampler, backend=backend, reward=reward, acceptance=acceptance,
                       critique=OmegaConf.to_container(cfg.critique, resolve=True), seed=cfg.seed,
                       _convert_="all", **overrides)


def sample_shard(cfg: DictConfig, run_dir: Path, backend, reward, acceptance, prompts: list[Prompt],
                 rank: int = 0, world_size: int = 1, progress: bool = True, on_records=None) -> SampleStore:
    """Run (or resume) the chains of this rank's prompts, appending to this rank's store shard."""
    store = open_store(cfg, backend.model_id, shard=rank)
    link = run_dir / "store"
    if rank == 0 and not link.is_symlink() and not link.exists():
        os.symlink(store.folder.resolve(), link, target_is_directory=True)
    sampler = build_sampler(cfg, backend, reward, acceptance)
    with store.lock():
        (store.folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        sampler.run(prompts[rank::world_size], store, progress=progress and rank == 0, on_records=on_records)
    return store


def collect(cfg: DictConfig, run_dir: Path, model_id: str, prompts: list[Prompt], write: bool = True,
            seconds: float | None = None) -> tuple[list[ChainStep], dict]:
    """The run's records from the merged store; written to the run folder with a summary."""
    store = open_store(cfg, model_id)
    records = wanted(store.load(), prompts, cfg.sampler.num_chains, cfg.sampler.num_steps)
    summary = summarise(records)
    summary["store"] = str(store.folder)
    if seconds is not None:
        summary["wall_seconds_this_run"] = seconds
    if write:
        with open(run_dir / "samples.jsonl", "w") as handle:
            handle.writelines(r.to_json() + "\n" for r in records)
        (run_dir / "sampling_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return records, summary


def run_sampling(cfg: DictConfig, run_dir: Path, backend, reward, acceptance, progress: bool = True,
                 on_records=None) -> tuple[list[ChainStep], dict]:
    run_dir.mkdir(parents=True, exist_ok=True)
    prompts = train_prompts(cfg, run_dir)
    started = time.perf_counter()
    sample_shard(cfg, run_dir, backend, reward, acceptance, prompts, progress=progress, on_records=on_records)
    records, summary = collect(cfg, run_dir, backend.model_id, prompts, seconds=time.perf_counter() - started)
    print(format_summary(summary))
    return records, summary
