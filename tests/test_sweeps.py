"""Sweeps: every Hydra sweep in sweeps/ is found by +sweep=<name> and every one of its jobs composes and
validates; the W&B sweep files drive the same entry point with the same grid; jobs that differ only
downstream of sampling share one sample store (a chain-length sweep reads prefixes of one store); and a
real 2×2 multirun (debug=tiny) gives a report whose rows carry the grid and each job's results.json.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dsc.paths import sweeps_dir
from dsc.sampling import store_key
from dsc.schema import validate

SWEEPS = sorted(p.stem for p in sweeps_dir().glob("*.yaml"))
WANDB_SWEEPS = sorted(p.stem for p in (sweeps_dir() / "wandb").glob("*.yaml"))


@pytest.fixture
def sweep_jobs(tmp_path):
    from hydra import compose, initialize_config_dir

    from dsc.paths import config_dir

    def jobs(name: str) -> list[list[str]]:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=[f"+sweep={name}", f"run_dir={tmp_path}"],
                          return_hydra_config=True)
        assert cfg.hydra.runtime.choices.sweep == name
        params = cfg.hydra.sweeper.params
        axes = [[f"{key}={value.strip()}" for value in str(values).split(",")] for key, values in params.items()]
        return [list(job) for job in itertools.product(*axes)]

    return jobs


def test_the_four_sweeps_exist_and_are_headed_with_their_command():
    assert {"acceptance", "divergences", "beta", "chain_length"} <= set(SWEEPS)
    assert set(WANDB_SWEEPS) == set(SWEEPS), "each Hydra sweep has its W&B sweep file (sweeps/wandb/)"
    for name in SWEEPS:
        lines = (sweeps_dir() / f"{name}.yaml").read_text().splitlines()
        assert lines[0] == "# @package _global_"
        assert lines[1].startswith(f"# python -m dsc -m +sweep={name}")


@pytest.mark.parametrize("name", SWEEPS)
def test_every_job_of_every_sweep_composes_and_validates(name, sweep_jobs, make_config, tmp_path):
    jobs = sweep_jobs(name)
    assert len(jobs) >= 2
    for job in jobs:
        cfg = make_config([f"+sweep={name}", *job, f"run_dir={tmp_path}"])
        validate(cfg)
        for override in job:
            key, value = override.split("=", 1)
            if key not in ("task", "acceptance", "divergence"):  # group choices: see the next test
                assert OmegaConf.select(cfg, key) == yaml.safe_load(value)


def test_sweep_jobs_select_what_they_name(sweep_jobs, make_config, tmp_path):
    for job in sweep_jobs("chain_length"):
        cfg = make_config([*job, f"run_dir={tmp_path}"])
        wanted = dict(o.split("=") for o in job)
        assert OmegaConf.select(cfg, "sampler.num_steps") == int(wanted["sampler.num_steps"])
        assert OmegaConf.select(cfg, "sampler.num_chains") == int(wanted["sampler.num_chains"])
    targets = {make_config([*job, f"run_dir={tmp_path}"]).divergence._target_ for job in sweep_jobs("divergences")}
    assert len(targets) == 4
    tasks = {(make_config([*job, f"run_dir={tmp_path}"]).task.name, job[1]) for job in sweep_jobs("acceptance")}
    assert tasks == {(t, f"acceptance={a}") for t in ("sentiment", "safety", "privacy") for a in ("metropolis", "always")}


@pytest.mark.parametrize("name", WANDB_SWEEPS)
def test_wandb_sweeps_drive_the_entry_point_with_the_hydra_grid(name, sweep_jobs, make_config, tmp_path):
    spec = yaml.safe_load((sweeps_dir() / "wandb" / f"{name}.yaml").read_text())
    assert (sweeps_dir() / "wandb" / f"{name}.yaml").read_text().startswith(f"# wandb sweep sweeps/wandb/{name}.yaml")
    assert spec["method"] == "grid" and spec["metric"]["name"] == "eval/reward_gain"
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "dsc"] and command[-1] == "${args_no_hyphens}"
    assert "logger=wandb" in command
    combos = [[f"{k}={v}" for k, v in zip(spec["parameters"], values)]
              for values in itertools.product(*(p["values"] for p in spec["parameters"].values()))]
    assert sorted(map(sorted, combos)) == sorted(map(sorted, sweep_jobs(name)))  # the same grid as +sweep=<name>
    for combo in combos:
        validate(make_config([*combo, "logger=wandb", f"run_dir={tmp_path}"]))


def test_jobs_that_differ_downstream_share_one_sample_store(sweep_jobs, make_config, tmp_path):
    def keys(name):
        return {tuple(job): store_key(make_config([*job, f"run_dir={tmp_path}"]), "model") for job in sweep_jobs(name)}

    assert len(set(keys("divergences").values())) == 1
    assert len(set(keys("chain_length").values())) == 1  # K and N are not in the key: prefixes of one store
    acceptance = keys("acceptance")
    assert len(set(acceptance.values())) == 6  # task × rule: each its own chains
    beta = keys("beta")
    assert len({k for job, k in beta.items() if "acceptance=always" in job}) == 1  # β does not change accept-all
    assert len({k for job, k in beta.items() if "acceptance=metropolis" in job}) == 4


@pytest.mark.slow
def test_a_shorter_narrower_run_reads_a_prefix_of_the_longer_store(make_config, tmp_path):
    """chain_length: once N=2, K=2 is sampled, N=1, K=1 generates nothing and reads that store's prefix.

    (The prefix is a valid N=1, K=1 sample, not a bit-identical copy of a fresh N=1, K=1 run: batched
    generation with left padding is not batch-invariant, so texts from step 1 on depend on the batch.)
    """
    from dsc.sampling import run_sampling

    def sample(chains: int, steps: int, backend=None):
        run_dir = tmp_path / f"run-n{chains}-k{steps}"
        cfg = make_config(["debug=tiny", "sampler.num_prompts=1", f"sampler.num_chains={chains}",
                           f"sampler.num_steps={steps}", f"samples_root={tmp_path / 'samples'}", f"run_dir={run_dir}"])
        backend = backend or instantiate(cfg.sampler.backend)
        records, _ = run_sampling(cfg, run_dir, backend, instantiate(cfg.reward), instantiate(cfg.acceptance),
                                  progress=False)
        return backend, records

    backend, long = sample(chains=2, steps=2)
    assert len(long) == 2 * 3
    store_files = sorted((tmp_path / "samples").glob("*/samples.*.jsonl"))
    before, calls = [p.read_bytes() for p in store_files], backend.generate_calls
    _, short = sample(chains=1, steps=1, backend=backend)
    assert backend.generate_calls == calls and [p.read_bytes() for p in store_files] == before
    assert short == [r for r in long if r.chain_id < 1 and r.step <= 1] and len(short) == 2


# ── a real 2×2 multirun, reported ─────────────────────────────────────────────────────────────────

GRID = {"acceptance": ["metropolis", "always"], "divergence": ["forward_kl", "weighted_forward_kl"]}


@pytest.fixture(scope="module")
def tiny_multirun(tmp_path_factory):
    """`python -m dsc -m` over acceptance × divergence, logging to W&B 'online' at an unreachable host."""
    root = tmp_path_factory.mktemp("multirun")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(HF_HUB_OFFLINE="1", WANDB_BASE_URL="http://127.0.0.1:9", WANDB_API_KEY="x" * 40)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "dsc", "-m", "debug=tiny", "threads=2", "task=sentiment",
         f"acceptance={','.join(GRID['acceptance'])}", f"divergence={','.join(GRID['divergence'])}",
         "sampler.num_prompts=1", "eval.num_prompts=1", "eval.chain=false",
         "logger=wandb", "logger.mode=online", "logger.probe_timeout=3",
         f"samples_root={root / 'samples'}", f"hydra.sweep.dir={root / 'sweep'}"],
        capture_output=True, text=True, env=env, timeout=1500)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-4000:]
    from dsc.report import make_report

    report = make_report(root / "sweep")
    return root, done, seconds, report


@pytest.mark.slow
def test_tiny_multirun_report_has_one_row_per_job_with_its_results(tiny_multirun):
    root, _, _, report = tiny_multirun
    sweep = root / "sweep"
    with open(sweep / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert report["keys"] == ["acceptance", "divergence"]
    assert sorted((r["acceptance"], r["divergence"]) for r in rows) == sorted(itertools.product(*GRID.values()))
    for row in rows:
        job = sweep / row["job"]
        results = json.loads((job / "results.json").read_text())
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert f"acceptance={row['acceptance']}" in overrides and f"divergence={row['divergence']}" in overrides
        for scorer in results["scorers"]:
            for part in ("mean", "ci_low", "ci_high"):
                assert float(row[f"distilled-base/{scorer}/{part}"]) == results["differences"]["distilled-base"][scorer][part]
            for arm in ("base", "distilled"):
                assert float(row[f"success/{scorer}/{arm}"]) == results["arms"][arm][f"success/{scorer}"]["mean"]
        sampling = json.loads((job / "sampling_summary.json").read_text())
        assert float(row["sampling/acceptance_rate/step_1"]) == sampling["acceptance_rate_per_step"]["1"]
        assert float(row["sampling/reward_final"]) == sampling["mean_reward_final"]
    md = (sweep / "report.md").read_text()
    table, between = md.split("Between settings of `divergence`")
    assert sum(line.startswith("| ") for line in table.splitlines()) == 1 + 4  # header + one line per job
    assert sum(line.startswith("| acceptance=") for line in between.splitlines()) == 2  # one pair per acceptance rule
    assert "shared overrides:" in md and "debug=tiny" in md
    for png in ("reward_gain.png", "acceptance_per_step.png"):
        assert (sweep / png).stat().st_size > 10_000


@pytest.mark.slow
def test_tiny_multirun_shares_stores_and_logs_grouped_offline_wandb_runs(tiny_multirun):
    from tests.test_tracking import offline_run

    root, done, seconds, report = tiny_multirun
    fallbacks = [line for line in done.stderr.splitlines() if "online logging unavailable" in line]
    assert len(fallbacks) == 4 and all("127.0.0.1:9 unreachable" in line for line in fallbacks)
    stores = sorted((root / "samples").iterdir())
    assert len(stores) == 2  # one per acceptance rule; the divergence axis reused them
    for store in stores:  # 1 prompt × 2 chains × (x₀ + 1 step), sampled once
        assert len((store / "samples.0.jsonl").read_text().splitlines()) == 4
    infos = [json.loads((root / "sweep" / str(i) / "wandb_run.json").read_text()) for i in range(4)]
    assert {i["mode"] for i in infos} == {"offline"}
    sweep = root / "sweep"
    assert {i["group"] for i in infos} == {f"{sweep.parent.name}_{sweep.name}_multirun"}
    assert {i["job_type"] for i in infos} == {"all"}
    job = root / "sweep" / "1"
    run = offline_run(job)
    assert run.run.run_group == infos[0]["group"] and "acceptance=metropolis" in run.run.display_name
    first = json.loads((job / "samples.jsonl").read_text().splitlines()[0])
    chains = run.table("sampling/chains")
    assert chains[0]["prompt"] == first["prompt"] and chains[0]["x0"] == first["response"]
    assert len(chains) == len((job / "samples.jsonl").read_text().splitlines())
    results = json.loads((job / "results.json").read_text())
    trained = results["trained_on"]
    assert run.metric("eval/reward_gain") == results["differences"]["distilled-base"][trained]["mean"]
    assert run.metric("train/loss") == pytest.approx(json.loads((job / "train_metrics.json").read_text())["train/loss"])
    assert [r["arm"] for r in run.table("eval/generations")] == ["base", "distilled"]
    store = Path(json.loads((job / "sampling_summary.json").read_text())["store"]).name
    assert {f"samples-{store}", f"adapter-{run.run.run_id}"} <= set(run.artifacts)
    report_run = report["wandb"]
    assert report_run and Path(report_run).parent == sweep / "wandb"
    assert "debug=tiny" in run.run.display_name and "samples_root" not in run.run.display_name


def test_report_on_a_hand_made_multirun_keeps_failed_jobs_and_varying_keys_only(tmp_path):
    from dsc.report import make_report

    stat = lambda m: {"mean": m, "ci_low": m - 0.1, "ci_high": m + 0.1, "n": 3}  # noqa: E731
    for num, (beta, results) in enumerate([("0.1", True), ("1.0", True), ("3.0", False)]):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["+sweep=beta", "debug=tiny", f"beta={beta}"]))
        (job / "sampling_summary.json").write_text(json.dumps(
            {"acceptance_rate_per_step": {"1": 0.5, "2": 0.25}, "mean_reward_initial": -0.1, "mean_reward_final": 0.2}))
        if results:
            (job / "results.json").write_text(json.dumps({
                "task": "sentiment", "trained_on": "vader", "scorers": {"vader": {"independent": False}},
                "arms": {a: {"success/vader": stat(0.5)} for a in ("base", "distilled")},
                "differences": {"distilled-base": {"vader": stat(0.25 * (num + 1))}}}))
            distilled = [[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]][num]  # per test prompt; the base rows must be ignored
            (job / "eval").mkdir()
            (job / "eval" / "generations.jsonl").write_text("".join(
                json.dumps({"prompt_id": f"t{i}", "arm": arm, "response": "…", "reward/vader": value if arm == "distilled" else 9.0}) + "\n"
                for i, value in enumerate(distilled) for arm in ("base", "distilled")))
    report = make_report(tmp_path, use_wandb=False)
    assert report["keys"] == ["beta"]
    rows = list(csv.DictReader(open(tmp_path / "report.csv")))
    assert [r["beta"] for r in rows] == ["0.1", "1.0", "3.0"]
    assert [r["distilled-base/vader/mean"] for r in rows] == ["0.25", "0.5", ""]
    assert rows[2]["sampling/acceptance_rate"] == "0.375"
    md = (tmp_path / "report.md").read_text()
    assert "shared overrides: debug=tiny, sweep=beta" in md and "No results.json (failed or not evaluated): jobs 2" in md
    assert "| 1 | 1.0 | — | vader / — | +0.500 [+0.400, +0.600] | — | — | — | 0.50→0.50 | — | 38% | -0.100→+0.200 |" in md
    assert "| all | beta=0.1 − beta=1.0 | 3 | vader +1.667 [" in md  # paired: (1 + 2 + 2) / 3
    assert (tmp_path / "reward_gain.png").stat().st_size > 10_000


def test_report_on_a_folder_without_jobs_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dsc.report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "has no job folders" in done.stderr
