"""DDP with 2 CPU processes (gloo) through the real entry point: sharded sampling, merged training set,
identical weights on both ranks, one run folder. How multi-process code is tested without a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_ddp_cpu_full_pipeline(tmp_path):
    run_dir, samples = tmp_path / "run", tmp_path / "samples"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dsc", "stage=all", "debug=tiny", "trainer=ddp_cpu", "threads=1", "logger=csv",
         "sampler.num_prompts=4", "trainer.max_steps=2", "eval.chain=false", f"samples_root={samples}",
         f"hydra.run.dir={run_dir}"],
        capture_output=True, text=True, env=env, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]

    store = next(samples.iterdir())
    shards = {p.name: [json.loads(x) for x in p.read_text().splitlines()] for p in store.glob("samples.*.jsonl")}
    assert set(shards) == {"samples.0.jsonl", "samples.1.jsonl"}  # each rank wrote its own shard
    prompts_by_rank = [{r["prompt_id"] for r in rows} for rows in shards.values()]
    assert all(len(p) == 2 for p in prompts_by_rank) and not (prompts_by_rank[0] & prompts_by_rank[1])
    keys = [(r["prompt_id"], r["chain_id"], r["step"]) for rows in shards.values() for r in rows]
    assert len(keys) == len(set(keys)) == 4 * 2 * 2  # no duplicates, none missing: prompts × chains × (K+1)

    merged = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert {(r["prompt_id"], r["chain_id"], r["step"]) for r in merged} == set(keys)

    states = [json.loads((run_dir / f"train_state.rank{r}.json").read_text()) for r in (0, 1)]
    assert states[0]["world_size"] == 2 and states[0]["global_step"] == states[1]["global_step"] == 2
    assert states[0]["trainable_sha256"] == states[1]["trainable_sha256"]  # identical LoRA weights
    assert states[0]["train_items_sha256"] == states[1]["train_items_sha256"]  # same merged training set
    assert not list(tmp_path.glob("outputs")) and (run_dir / "results.json").exists()  # one run folder, evaluated
