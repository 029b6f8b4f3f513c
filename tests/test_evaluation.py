"""Evaluation: the statistics on synthetic data with known answers, and the whole evaluation stage on 2
test prompts with the real bundled model (fp32) wrapped in a LoRA, composed from the real config
(``debug=tiny``, 8 new tokens per turn). The stage runs 6 generate calls and 3 scoring passes: 40 s
to several minutes on 2 shared cores, hence ``slow``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsc.evaluation.metrics import distinct_n, mean_ci, paired_bootstrap, repetition_rate  # noqa: E402

CI_FIELDS = {"mean", "ci_low", "ci_high", "n"}


# ── statistics ─────────────────────────────────────────────────────────────────────────────────
def test_paired_bootstrap_recovers_a_known_difference():
    rng = np.random.default_rng(1)
    b = rng.normal(0.0, 5.0, size=200)        # prompts differ a lot from one another …
    a = b + 0.5 + rng.normal(0.0, 0.3, 200)   # … but a beats b by 0.5 on every prompt, up to noise
    result = paired_bootstrap(a, b, seed=0)
    assert set(result) == CI_FIELDS and result["n"] == 200
    assert result["ci_low"] < 0.5 < result["ci_high"]
    assert result["ci_low"] > 0.0
    assert result["mean"] == pytest.approx(float(np.mean(a - b)))
    assert result["ci_high"] - result["ci_low"] < 0.2  # ≈ 2·1.96·0.3/√200 = 0.08: the pairing is used
    # unpaired (a shuffled against b) the prompt-to-prompt spread swamps the difference
    shuffled = paired_bootstrap(rng.permutation(a), b, seed=0)
    assert shuffled["ci_low"] < 0.0 < shuffled["ci_high"]


def test_paired_bootstrap_covers_zero_without_a_difference_and_is_seeded():
    rng = np.random.default_rng(2)
    b = rng.normal(size=100)
    a = b + rng.normal(0.0, 1.0, 100)
    result = paired_bootstrap(a, b, seed=3)
    assert result["ci_low"] < 0.0 < result["ci_high"]
    assert paired_bootstrap(a, b, seed=3) == result
    empty = paired_bootstrap([], [])
    assert empty["n"] == 0 and np.isnan(empty["mean"])


def test_mean_ci_and_constant_data():
    result = mean_ci([1.0, 1.0, 1.0])
    assert result == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 3}
    result = mean_ci([0.0, 1.0] * 50)
    assert result["mean"] == 0.5 and result["ci_low"] < 0.5 < result["ci_high"]


def test_degeneration_measures_by_hand():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)  # (a b), (b c), (b d) of 4 bigrams
    assert distinct_n(["one"], 2) == 0.0
    assert repetition_rate("x y z x y z") == pytest.approx(1 - 3 / 4)  # 4 trigrams, 3 distinct
    assert repetition_rate("a b c d") == 0.0


# ── the evaluation stage on the real model ─────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from peft import LoraConfig, get_peft_model

    from dsc.backends.base import SamplingParams
    from dsc.backends.hf import HFBackend
    from dsc.chat import user_chat
    from dsc.evaluation.evaluate import run_evaluation
    from dsc.models import ModelSpec, load_model
    from dsc.paths import config_dir
    from dsc.prompts import select
    from dsc.sampling import load_prompt_set
    from dsc.seeding import derive_seed

    torch.set_num_threads(2)
    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "debug=tiny", f"run_dir={run_dir}", "model.dtype=float32", "eval.generation.max_new_tokens=8",
            "sampler.proposal.max_new_tokens=8", "sampler.critique_params.max_new_tokens=8",
            "sampler.revision_params.max_new_tokens=8"])
    assert cfg.eval.num_prompts == 2
    model, tokenizer, model_id = load_model(ModelSpec(dtype="float32"))
    backend = HFBackend(model=None, loaded=(model, tokenizer, model_id))

    # what the plain base model says with the evaluation's own seeds, before any adapter exists
    prompts = select(load_prompt_set(cfg), "test", cfg.eval.num_prompts, cfg.seed)
    params = SamplingParams(**cfg.eval.generation)
    plain = [o.text for o in backend.generate([user_chat(p.text) for p in prompts], params,
                                              [derive_seed(cfg.seed, "eval", "single", p.id) for p in prompts])]

    torch.manual_seed(0)
    student = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", r=8, lora_alpha=16,
                                               target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a "trained" adapter: move lora_B off zero so the student differs from the base
        for name, param in student.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    backend.model = student.eval()
    results = run_evaluation(cfg, run_dir, backend, instantiate(cfg.reward), instantiate(cfg.acceptance))
    return results, run_dir, plain, cfg


@pytest.mark.slow
def test_evaluation_writes_all_arms_with_n_and_cis(evaluated):
    results, run_dir, _, cfg = evaluated
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert on_disk["n_prompts"] == 2
    assert set(on_disk["arms"]) == {"base", "distilled", "chain"}
    scorers = on_disk["scorers"]
    assert len(scorers) >= 2 and on_disk["trained_on"] in scorers
    assert any(s["independent"] for s in scorers.values()) and not scorers[on_disk["trained_on"]]["independent"]
    for arm, entry in on_disk["arms"].items():
        assert entry["n"] == 2
        for scorer in scorers:
            for kind in ("reward", "success"):
                stat = entry[f"{kind}/{scorer}"]
                assert set(stat) == CI_FIELDS and stat["n"] == 2, (arm, scorer, kind)
                assert stat["ci_low"] <= stat["mean"] <= stat["ci_high"]
        assert entry["tokens_per_prompt"] > 0 and entry["seconds_per_prompt"] > 0
        assert np.isfinite(entry["perplexity_under_base"]) and entry["perplexity_under_base"] > 1
        assert 0 <= entry["distinct_2"] <= 1 and 0 <= entry["repetition_rate"] <= 1
    assert set(on_disk["differences"]) == {"distilled-base", "chain-base", "distilled-chain"}
    for diffs in on_disk["differences"].values():
        assert set(diffs) == set(scorers)
        assert all(set(d) == CI_FIELDS and d["n"] == 2 for d in diffs.values())
    assert (run_dir / "eval" / "rewards.png").stat().st_size > 1000
    # the chain's cost is read from its stored records, so a re-evaluation reports it unchanged
    from dsc.store import SampleStore

    stored = SampleStore(run_dir / "eval" / "chain_store").load()
    assert {(r.chain_id, r.step) for r in stored} == {(0, 0), (0, 1)} and len(stored) == 2 * 2
    chain = on_disk["arms"]["chain"]
    assert chain["seconds_per_prompt"] == pytest.approx(sum(r.seconds for r in stored) / 2)
    assert chain["tokens_per_prompt"] == pytest.approx(sum(r.completion_tokens for r in stored) / 2)


@pytest.mark.slow
def test_evaluation_generations_per_arm(evaluated):
    results, run_dir, plain, _ = evaluated
    rows = [json.loads(line) for line in (run_dir / "eval" / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2
    by_arm = {arm: [r["response"] for r in rows if r["arm"] == arm] for arm in ("base", "distilled", "chain")}
    assert by_arm["base"] == plain  # the base arm is the base model (adapters off), same seeds
    assert by_arm["distilled"] != by_arm["base"]  # the student's adapter is on
    for r in rows:
        assert set(results["scorers"]) <= {k.removeprefix("reward/") for k in r if k.startswith("reward/")}
    # the paired difference in the file is the mean of the per-prompt differences
    trained = results["trained_on"]
    diff = [d[f"reward/{trained}"] - b[f"reward/{trained}"]
            for d, b in zip([r for r in rows if r["arm"] == "distilled"], [r for r in rows if r["arm"] == "base"])]
    assert results["differences"]["distilled-base"][trained]["mean"] == pytest.approx(sum(diff) / 2)
