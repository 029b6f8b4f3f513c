"""The sampling stage: pick the prompts, find (or create) the content-addressed sample store, run the
chains that are missing, and leave this run's records and summary in the run folder.

A store is identified by everything that determines a chain's content — model identity and weights
hash, prompt source, critique prompts, per-turn sampling params, reward, acceptance (β included) and
seed — and nothing else: not the number of prompts, chains or steps (a store grows; a shorter run
reads a prefix of a longer one), not the divergence, not the logger. Reruns and sweep jobs that
differ only downstream share it; a writer holds its lock, a second one waits.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dsc.records import ChainStep, Prompt
from dsc.prompts import save_prompts, select
from dsc.store import SampleStore
from dsc.summary import format_summary, summarise


def load_prompt_set(cfg: DictConfig) -> list[Prompt]:
    return instantiate(cfg.task.prompts).load()


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


@dataclass
class SamplingResult:
    prompts: list[Prompt]
    records: list[ChainStep]
    store: SampleStore
    summary: dict


def wanted(records: list[ChainStep], prompts: list[Prompt], num_chains: int, num_steps: int) -> list[ChainStep]:
    """This run's slice of a (possibly larger) store, in prompt/chain/step order, without duplicates."""
    order = {p.id: i for i, p in enumerate(prompts)}
    seen: dict[tuple, ChainStep] = {}
    for r in records:
        if r.prompt_id in order and r.chain_id < num_chains and r.step <= num_steps:
            seen.setdefault(r.key, r)
    return sorted(seen.values(), key=lambda r: (order[r.prompt_id], r.chain_id, r.step))


def run_sampling(cfg: DictConfig, run_dir: Path, backend, reward, acceptance,
                 prompts: list[Prompt] | None = None, progress: bool = True, on_records=None) -> SamplingResult:
    run_dir.mkdir(parents=True, exist_ok=True)
    if prompts is None:
        all_prompts = load_prompt_set(cfg)
        save_prompts(all_prompts, run_dir / "prompts.jsonl")
        prompts = select(all_prompts, cfg.sampler.split, cfg.sampler.num_prompts, cfg.seed)
    store = SampleStore(Path(cfg.samples_root) / f"{cfg.task.name}-{store_key(cfg, backend.model_id)}")
    link = run_dir / "store"
    if not link.exists():
        os.symlink(store.folder.resolve(), link, target_is_directory=True)
    sampler = instantiate(cfg.sampler, backend=backend, reward=reward, acceptance=acceptance,
                          critique=OmegaConf.to_container(cfg.critique, resolve=True), seed=cfg.seed, _convert_="all")
    started = time.perf_counter()
    with store.lock():
        (store.folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        sampler.run(prompts, store, progress=progress, on_records=on_records)
        records = wanted(store.load(), prompts, sampler.num_chains, sampler.num_steps)
    elapsed = time.perf_counter() - started
    with open(run_dir / "samples.jsonl", "w") as handle:
        handle.writelines(r.to_json() + "\n" for r in records)
    summary = summarise(records)
    summary["wall_seconds_this_run"] = elapsed
    summary["store"] = str(store.folder)
    (run_dir / "sampling_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print(format_summary(summary))
    return SamplingResult(prompts, records, store, summary)
