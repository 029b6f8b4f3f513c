"""End to end on the real bundled model (SmolLM2-135M), real rewards, tiny sizes.

The sampling test checks the chain's contract from what is on disk: stored rewards recompute from the
stored texts, every decision satisfies accepted == (u < α), revisions are real rewrites, and the
sampler stays within turns × ⌈prompts·chains / batch⌉ generate calls; a rerun on the same store
generates nothing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from hydra.utils import instantiate

from dsc.sampling import run_sampling


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from tests.conftest import compose_config

    root = tmp_path_factory.mktemp("e2e")
    cfg = compose_config(["debug=tiny", "task=sentiment", f"samples_root={root / 'samples'}", f"run_dir={root / 'run'}",
                          "sampler.num_chains=3", "sampler.batch_size=4"])
    backend = instantiate(cfg.sampler.backend)
    reward, acceptance = instantiate(cfg.reward), instantiate(cfg.acceptance)
    records, summary = run_sampling(cfg, root / "run", backend, reward, acceptance, progress=False)
    return cfg, backend, reward, acceptance, records, summary, root


def test_every_step_of_every_chain_is_on_disk(tiny_run):
    cfg, _, _, _, records, summary, root = tiny_run
    lines = (root / "run" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == len(records) == 2 * 3 * (1 + 1)  # prompts × chains × (proposal + K steps)
    keys = {(json.loads(x)["prompt_id"], json.loads(x)["chain_id"], json.loads(x)["step"]) for x in lines}
    assert len(keys) == len(lines)
    assert summary["chains"] == 6 and summary["prompts"] == 2
    assert (root / "run" / "prompts.jsonl").exists() and (root / "run" / "store").is_symlink()


def test_stored_rewards_recompute_from_stored_texts(tiny_run):
    _, _, reward, _, records, _, _ = tiny_run
    prompts = [r.prompt for r in records]
    for field, text_field in (("reward_response", "response"), ("reward_state", "state")):
        stored = torch.tensor([getattr(r, field) for r in records])
        again = reward.score(prompts, [getattr(r, text_field) for r in records])
        assert torch.allclose(stored.float(), again.float(), atol=1e-6), field
    steps = [r for r in records if r.step > 0]
    again = reward.score([r.prompt for r in steps], [r.revision for r in steps])
    assert torch.allclose(torch.tensor([r.reward_revision for r in steps]).float(), again.float(), atol=1e-6)


def test_acceptance_decisions_recheck_from_disk(tiny_run):
    cfg, _, _, _, records, _, _ = tiny_run
    steps = [r for r in records if r.step > 0]
    assert steps
    for r in steps:
        assert r.accepted == (r.u < r.alpha)
        expected = math.exp(min(0.0, (r.reward_revision - r.reward_response) / cfg.beta))
        assert r.alpha == pytest.approx(expected, rel=1e-9)
        assert r.state == (r.revision if r.accepted else r.response)


def test_revisions_are_rewrites_and_context_restarts(tiny_run):
    _, _, _, _, records, _, _ = tiny_run
    steps = [r for r in records if r.step > 0]
    assert any(r.revision.strip() != r.response.strip() for r in steps)
    assert all(r.critique for r in steps)


def test_generate_calls_within_bound_and_resume_generates_nothing(tiny_run):
    cfg, backend, reward, acceptance, _, _, root = tiny_run
    prompts, chains, steps, batch = 2, 3, 1, 4
    turns = 1 + 2 * steps
    assert backend.generate_calls <= turns * math.ceil(prompts * chains / batch)
    before = backend.generate_calls
    records, _ = run_sampling(cfg, root / "run", backend, reward, acceptance, progress=False)
    assert backend.generate_calls == before
    assert len(records) == 12


@pytest.mark.slow
def test_cli_full_pipeline_tiny(tmp_path):
    """`python -m dsc debug=tiny` — sample → distil → evaluate — through the real entry point."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "dsc", "debug=tiny", "threads=2", "logger=csv",
                           f"samples_root={tmp_path / 'samples'}", f"hydra.run.dir={run_dir}"],
                          capture_output=True, text=True, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["arms"]) == {"base", "distilled", "chain"}
    assert results["arms"]["distilled"]["n"] == 2
    assert "distilled-base" in results["differences"]
    assert (run_dir / "adapter" / "adapter_config.json").exists()
    assert (run_dir / "eval" / "rewards.png").stat().st_size > 1000
    train = json.loads((run_dir / "train_metrics.json").read_text())
    assert train["global_step"] == 1 and math.isfinite(train["train/loss"])
    assert "sampling summary" in done.stdout and "evaluation: task=sentiment" in done.stdout
