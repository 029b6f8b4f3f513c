"""The evaluation stage: three arms on held-out test prompts, every arm scored by every scorer.

Arms: ``base`` (one generation of the base model, adapters off), ``distilled`` (one generation of the
student), ``chain`` (the critique→revision chain run on the base model: its final state). Per arm and
scorer: mean reward and success rate; per arm: tokens and seconds per prompt, perplexity under the
base model (fluency), distinct-2 and repetition rate (degeneration); for safety, the over-refusal
rate on benign prompts. Differences between arms are paired over prompts with bootstrap 95 % CIs.
Scorers include the training reward and at least one the run did not train on (``task.scorers``).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from dsc.backends.base import SamplingParams
from dsc.chat import user_chat
from dsc.evaluation.metrics import distinct_n, mean_ci, paired_bootstrap, repetition_rate
from dsc.prompts import select
from dsc.records import Prompt
from dsc.sampling import build_sampler, load_prompt_set, wanted
from dsc.seeding import derive_seed
from dsc.store import SampleStore
from dsc.summary import final_states

COMPARISONS = (("distilled", "base"), ("chain", "base"), ("distilled", "chain"))


def adapters_off(model):
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def _generate_arm(backend, prompts: list[Prompt], params: SamplingParams, seed: int, tag: str) -> dict:
    started = time.perf_counter()
    outs = backend.generate([user_chat(p.text) for p in prompts], params,
                            [derive_seed(seed, "eval", tag, p.id) for p in prompts])
    return {"texts": [o.text for o in outs], "tokens": [o.completion_tokens for o in outs],
            "seconds": time.perf_counter() - started}


def _chain_arm(cfg, backend, reward, acceptance, prompts, run_dir: Path) -> dict:
    """The chain's final state per prompt. Its cost comes from the stored records (each holds its
    step's wall time), so a re-evaluation that finds the chains already in the store reports what
    they cost to make, not the ≈0 s of reading them back."""
    store = SampleStore(run_dir / "eval" / "chain_store")
    sampler = build_sampler(cfg, backend, reward, acceptance, num_chains=1)
    with adapters_off(backend.model):
        sampler.run(prompts, store, progress=False)
    records = wanted(store.load(), prompts, num_chains=1, num_steps=cfg.sampler.num_steps)
    finals = final_states(records)
    tokens = {p.id: 0 for p in prompts}
    for r in records:
        tokens[r.prompt_id] += r.completion_tokens
    return {"texts": [finals[(p.id, 0)].state for p in prompts], "tokens": [tokens[p.id] for p in prompts],
            "seconds": sum(r.seconds for r in records)}


def _perplexity(backend, prompts, texts) -> float:
    with adapters_off(backend.model):
        logps = backend.logprob([user_chat(p.text) for p in prompts], texts)
    counts = [len(backend.tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts]
    return math.exp(-sum(logps) / max(sum(counts), 1))


def run_evaluation(cfg: DictConfig, run_dir: Path, backend, reward, acceptance, chain_backend=None) -> dict:
    """``chain_backend``: the model whose chain is the ``chain`` arm (the teacher under transfer);
    defaults to ``backend`` with adapters off."""
    out_dir = run_dir / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = select(load_prompt_set(cfg), "test", cfg.eval.num_prompts, cfg.seed)
    params = SamplingParams(**cfg.eval.generation)
    scorers = {name: instantiate(node) for name, node in cfg.task.scorers.items()}
    trained_on = getattr(reward, "name", "reward")
    scorers.setdefault(trained_on, reward)

    arms = {}
    with adapters_off(backend.model):
        arms["base"] = _generate_arm(backend, prompts, params, cfg.seed, "single")
    if hasattr(backend.model, "disable_adapter"):
        arms["distilled"] = _generate_arm(backend, prompts, params, cfg.seed, "single")
    if cfg.eval.chain:
        arms["chain"] = _chain_arm(cfg, chain_backend or backend, reward, acceptance, prompts, run_dir)

    texts = [p.text for p in prompts]
    results: dict = {"task": cfg.task.name, "n_prompts": len(prompts), "trained_on": trained_on,
                     "scorers": {n: {"independent": n != trained_on} for n in scorers}, "arms": {}, "differences": {}}
    per_prompt: dict[str, dict[str, list[float]]] = {}
    for arm, data in arms.items():
        entry: dict = {"n": len(prompts)}
        per_prompt[arm] = {}
        for name, scorer in scorers.items():
            values = scorer.score(texts, data["texts"])
            success = scorer.success(values).float().tolist()
            values = [float(v) for v in values]
            per_prompt[arm][name] = values
            entry[f"reward/{name}"] = mean_ci(values)
            entry[f"success/{name}"] = mean_ci(success)
        entry["tokens_per_prompt"] = sum(data["tokens"]) / max(len(prompts), 1)
        entry["seconds_per_prompt"] = data["seconds"] / max(len(prompts), 1)
        entry["perplexity_under_base"] = _perplexity(backend, prompts, data["texts"])
        entry["distinct_2"] = distinct_n(data["texts"], 2)
        entry["repetition_rate"] = sum(repetition_rate(t) for t in data["texts"]) / max(len(prompts), 1)
        results["arms"][arm] = entry
    for a, b in COMPARISONS:
        if a in arms and b in arms:
            results["differences"][f"{a}-{b}"] = {
                name: paired_bootstrap(per_prompt[a][name], per_prompt[b][name], seed=cfg.seed) for name in scorers}
    if cfg.task.get("benign_prompts") is not None and cfg.eval.num_benign > 0:
        results["over_refusal"] = _over_refusal(cfg, backend, params)

    (out_dir / "generations.jsonl").write_text("".join(
        json.dumps({"prompt_id": p.id, "prompt": p.text, "arm": arm, "response": data["texts"][i],
                    **{f"reward/{n}": per_prompt[arm][n][i] for n in scorers}}) + "\n"
        for arm, data in arms.items() for i, p in enumerate(prompts)))
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    from dsc.evaluation.report import plot_rewards, results_table

    plot_rewards(per_prompt, trained_on, out_dir / "rewards.png", cfg.task.name)
    print(results_table(results))
    return results


def _over_refusal(cfg, backend, params) -> dict:
    from dsc.rewards.refusal import RefusalDetector

    benign = select(instantiate(cfg.task.benign_prompts).load(), "test", cfg.eval.num_benign, cfg.seed)
    detector = RefusalDetector()
    out = {}
    arms = [("base", adapters_off(backend.model))]
    if hasattr(backend.model, "disable_adapter"):
        arms.append(("distilled", nullcontext()))
    for arm, context in arms:
        with context:
            gen = _generate_arm(backend, benign, params, cfg.seed, "benign")
        refused = detector.score([p.text for p in benign], gen["texts"]).tolist()
        out[arm] = mean_ci(refused)
    return out
