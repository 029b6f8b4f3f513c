"""`python -m dsc.report <multirun dir>`: one table and two plots for a sweep.

Reads every job folder of a Hydra multirun (``.hydra/overrides.yaml``, ``results.json``,
``sampling_summary.json``) and writes into the multirun folder (or ``--out``):
- ``report.csv``: one row per job; the overrides that vary across jobs, then every paired difference
  (distilled−base, chain−base, …) per scorer with its 95 % bootstrap CI, success rates per arm and the
  sampling summary (acceptance rate per chain step, reward of x₀ and of the final state);
- ``report.md``: compact rows (mean [CI]) with columns by scorer *role* — the reward the job trained on
  and the independent scorer — so a sweep across tasks (each with its own scorers) reads as one table;
  plus the test-prompt count n and the overrides shared by all jobs, and the sweep's ablation itself:
  the last varying key's first value against each other value, distilled vs distilled, paired over
  the same test prompts;
- ``reward_gain.png``: distilled − base reward per setting with CI error bars, one panel per role;
- ``acceptance_per_step.png``: acceptance rate per chain step, one line per job.
Jobs without ``results.json`` (failed, or stage=sample) keep their row with the metrics left empty.
When the jobs logged to W&B (``wandb_run.json``), the table and plots go to a ``report`` run of the same
project and group (offline unless the jobs were online); ``--no-wandb`` skips that.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from dsc.errors import DscError, fail
from dsc.evaluation.report import format_ci
from dsc.jsonl import read_json, read_rows
from dsc.summary import per_step


@dataclass
class Job:
    """One job folder of a multirun."""

    name: str
    """The folder name (Hydra's job number)."""
    folder: Path
    """The job's run folder."""
    overrides: dict[str, str]
    """Task overrides of the job (``key=value`` from .hydra/overrides.yaml, ``+``/``~`` dropped)."""
    results: dict | None = None
    """results.json of the evaluation stage, None if absent."""
    sampling: dict | None = None
    """sampling_summary.json, None if absent."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Flat numeric metrics of this row (see ``job_metrics``)."""


def load_jobs(root: Path) -> list[Job]:
    if not root.is_dir():
        raise DscError(f"multirun dir {root} does not exist; pass a folder made by python -m dsc -m …")
    jobs = []
    for overrides_file in root.glob("*/.hydra/overrides.yaml"):
        folder = overrides_file.parent.parent
        pairs = [str(o).lstrip("+~").split("=", 1) for o in (yaml.safe_load(overrides_file.read_text()) or [])]
        job = Job(folder.name, folder, {p[0]: p[1] if len(p) > 1 else "" for p in pairs},
                  read_json(folder / "results.json"), read_json(folder / "sampling_summary.json"))
        job.metrics = job_metrics(job)
        jobs.append(job)
    if not jobs:
        raise DscError(f"multirun dir {root} has no job folders (*/.hydra/overrides.yaml); "
                       "pass the folder of a python -m dsc -m … run, e.g. outputs/multirun/<date>/<time>")
    return sorted(jobs, key=lambda j: (not j.name.isdigit(), int(j.name) if j.name.isdigit() else 0, j.name))


def varying_keys(jobs: list[Job]) -> list[str]:
    keys = list(dict.fromkeys(k for j in jobs for k in j.overrides))
    return [k for k in keys if len({j.overrides.get(k) for j in jobs}) > 1]


def job_metrics(job: Job) -> dict[str, float]:
    """Flat metrics: ``<a>-<b>/<scorer>/{mean,ci_low,ci_high}``, ``success/<scorer>/<arm>``, sampling."""
    out: dict[str, float] = {}
    results = job.results or {}
    for comparison, by_scorer in results.get("differences", {}).items():
        for scorer, stat in by_scorer.items():
            for part in ("mean", "ci_low", "ci_high"):
                out[f"{comparison}/{scorer}/{part}"] = float(stat[part])
    for arm, entry in results.get("arms", {}).items():
        for scorer in results.get("scorers", {}):
            if f"success/{scorer}" in entry:
                out[f"success/{scorer}/{arm}"] = float(entry[f"success/{scorer}"]["mean"])
    rates = per_step(job.sampling)
    if rates:
        out["sampling/acceptance_rate"] = sum(rates.values()) / len(rates)
        out.update({f"sampling/acceptance_rate/step_{s}": r for s, r in sorted(rates.items())})
    for key, name in (("mean_reward_initial", "reward_x0"), ("mean_reward_final", "reward_final")):
        if job.sampling and key in job.sampling:
            out[f"sampling/{name}"] = float(job.sampling[key])
    return out


def write_csv(jobs: list[Job], keys: list[str], path: Path) -> None:
    metric_names = list(dict.fromkeys(m for j in jobs for m in j.metrics))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", *keys, *metric_names])
        for j in jobs:
            writer.writerow([j.name, *(j.overrides.get(k, "") for k in keys),
                             *(repr(j.metrics[m]) if m in j.metrics else "" for m in metric_names)])


ROLES = ("trained", "independent")
"""Columns and panels are by the scorer's role, so one table reads across tasks (each task has its own
scorers): the reward the run trained on, and the first scorer it did not train on."""


def role_scorer(job: Job, role: str) -> str | None:
    results = job.results or {}
    if role == "trained":
        return results.get("trained_on")
    return next((s for s, info in results.get("scorers", {}).items() if info.get("independent")), None)


def _role_names(jobs: list[Job], role: str) -> str:
    return "/".join(dict.fromkeys(s for j in jobs if (s := role_scorer(j, role))))


def _ci(m: dict[str, float], prefix: str) -> str:
    if f"{prefix}/mean" not in m:
        return "—"
    return format_ci({part: m[f"{prefix}/{part}"] for part in ("mean", "ci_low", "ci_high")})


def _success(m: dict[str, float], scorer: str | None, arms=("base", "distilled", "chain")) -> str:
    values = [f"{m[f'success/{scorer}/{a}']:.2f}" for a in arms if f"success/{scorer}/{a}" in m]
    return "→".join(values) if len(values) >= 2 else "—"


def markdown(jobs: list[Job], keys: list[str], root: Path) -> str:
    header = ["job", *keys, "n test", "scorers (trained / independent)",
              *(f"{c}, {r}" for c in ("distilled−base", "chain−base") for r in ROLES),
              *(f"success base→distilled→chain, {r}" for r in ROLES), "acceptance", "reward x₀→final"]
    lines = [f"# Sweep report: {root}", ""]
    shared = sorted({f"{k}={v}" for j in jobs for k, v in j.overrides.items() if k not in keys})
    lines += [f"{len(jobs)} jobs; shared overrides: {', '.join(shared) or 'none'}. "
              "Differences are paired over the n test prompts, mean [95 % bootstrap CI]; "
              f"trained scorer(s): {_role_names(jobs, 'trained') or '—'}; "
              f"independent scorer(s): {_role_names(jobs, 'independent') or '—'}.", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for j in jobs:
        m = j.metrics
        names = {r: role_scorer(j, r) for r in ROLES}
        accept = f"{m['sampling/acceptance_rate']:.0%}" if "sampling/acceptance_rate" in m else "—"
        reward = (f"{m['sampling/reward_x0']:+.3f}→{m['sampling/reward_final']:+.3f}"
                  if "sampling/reward_final" in m else "—")
        n = str((j.results or {}).get("n_prompts", "—"))
        row = [j.name, *(j.overrides.get(k, "") for k in keys), n,
               " / ".join(names[r] or "—" for r in ROLES) if j.results else "—",
               *(_ci(m, f"{c}/{names[r]}") for c in ("distilled-base", "chain-base") for r in ROLES),
               *(_success(m, names[r]) for r in ROLES), accept, reward]
        lines.append("| " + " | ".join(row) + " |")
    lines += between_settings(jobs, keys)
    missing = [j.name for j in jobs if j.results is None]
    if missing:
        lines += ["", f"No results.json (failed or not evaluated): jobs {', '.join(missing)}."]
    lines += ["", "![reward gain](reward_gain.png)", "", "![acceptance per step](acceptance_per_step.png)", ""]
    return "\n".join(lines)


def _distilled_rewards(job: Job) -> dict[str, dict[str, float]]:
    """prompt id → {scorer: reward} of the distilled arm, from the job's eval/generations.jsonl."""
    rows = read_rows(job.folder / "eval" / "generations.jsonl")
    return {r["prompt_id"]: {k[len("reward/"):]: v for k, v in r.items() if k.startswith("reward/")}
            for r in rows if r.get("arm") == "distilled"}


def between_settings(jobs: list[Job], keys: list[str]) -> list[str]:
    """The ablation the sweep exists for: the last varying key's first value against each other value,
    distilled arm vs distilled arm, paired over the test prompts both jobs evaluated (same prompts, same
    seeds), per scorer. Each job's own CIs cannot answer this: their intervals overlap even when the
    paired difference is clear, and vice versa."""
    from dsc.evaluation.metrics import paired_bootstrap

    if not keys:
        return []
    hue, rest = keys[-1], keys[:-1]
    rows = []
    groups: dict[tuple, list[Job]] = {}
    for j in jobs:
        if j.results:
            groups.setdefault(tuple(j.overrides.get(k, "") for k in rest), []).append(j)
    for group, members in groups.items():
        reference = _distilled_rewards(members[0])
        for other in members[1:]:
            theirs = _distilled_rewards(other)
            ids = sorted(set(reference) & set(theirs))
            names = [s for s in (role_scorer(members[0], r) for r in ROLES) if s and ids and s in reference[ids[0]]]
            if not names:
                continue
            cells = []
            for name in names:
                d = paired_bootstrap([reference[i][name] for i in ids], [theirs[i][name] for i in ids])
                cells.append(f"{name} {format_ci(d)}")
            where = ", ".join(f"{k}={v}" for k, v in zip(rest, group))
            rows.append(f"| {where or 'all'} | {hue}={members[0].overrides.get(hue)} − {hue}={other.overrides.get(hue)} "
                        f"| {len(ids)} | {' ; '.join(cells)} |")
    if not rows:
        return []
    return ["", f"Between settings of `{hue}` (distilled arm − distilled arm, paired over the same test prompts; "
            "trained scorer, then independent):", "",
            "| setting | difference | n | mean [95 % CI] |", "|---|---|---|---|", *rows]


def _label(job: Job, keys: list[str]) -> str:
    return ", ".join(f"{k}={job.overrides.get(k, '')}" for k in keys) or f"job {job.name}"


def plot_reward_gain(jobs: list[Job], keys: list[str], path: Path) -> None:
    """Panels = scorer roles (trained, independent); x = settings of all varying keys but the last;
    colour = the last key's value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hue = keys[-1] if len(keys) >= 2 else None
    x_keys = keys[:-1] if hue else keys
    groups = list(dict.fromkeys(_label(j, x_keys) for j in jobs))
    hues = list(dict.fromkeys(j.overrides.get(hue, "") for j in jobs)) if hue else [None]
    fig, axes = plt.subplots(1, len(ROLES), figsize=(max(5.0, 1.2 * len(groups) + 3) * len(ROLES) / 1.4, 4.2),
                             dpi=120, squeeze=False)
    for ax, role in zip(axes[0], ROLES):
        for h_index, h in enumerate(hues):
            xs, ys, lo, hi = [], [], [], []
            for j in jobs:
                if hue and j.overrides.get(hue, "") != h:
                    continue
                m, prefix = j.metrics, f"distilled-base/{role_scorer(j, role)}"
                if f"{prefix}/mean" not in m:
                    continue
                offset = (h_index - (len(hues) - 1) / 2) * 0.12
                xs.append(groups.index(_label(j, x_keys)) + offset)
                ys.append(m[f"{prefix}/mean"])
                lo.append(ys[-1] - m[f"{prefix}/ci_low"])
                hi.append(m[f"{prefix}/ci_high"] - ys[-1])
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=4, markersize=6,
                            label=f"{hue}={h}" if hue else "mean, 95 % CI")
        ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
        ticks = [g.split("=", 1)[1] if len(x_keys) == 1 else g.replace(", ", "\n") for g in groups]
        ax.set_xticks(range(len(groups)), ticks, fontsize=9)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_xlabel(", ".join(x_keys) if x_keys else "job")
        ax.set_ylabel("distilled − base reward")
        names = _role_names(jobs, role).replace("/", ", ") or "none"
        ax.set_title(f"{'training reward' if role == 'trained' else 'independent scorer'}\n{names}", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    fig.suptitle("Reward gain of the distilled model over the base model per setting\n"
                 "(mean over test prompts, paired 95 % bootstrap CI)", fontsize=10)
    fig.tight_layout(rect=(0, 0.08 if handles else 0, 1, 1))
    fig.savefig(path)
    plt.close(fig)


def plot_acceptance(jobs: list[Job], keys: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    series = [(j, per_step(j.sampling)) for j in jobs]
    series = [(j, rates) for j, rates in series if rates]
    markers, styles = "osD^vP*X", ["-", "--", "-.", ":"]
    for i, (j, rates) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * 0.04  # jobs that share a store coincide; keep them visible
        steps = sorted(rates)
        ax.plot([s + offset for s in steps], [rates[s] for s in steps], marker=markers[i % len(markers)],
                linestyle=styles[i % len(styles)], label=_label(j, keys))
    steps = sorted({s for _, rates in series for s in rates})
    ax.set_xticks(steps or [1])
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("chain step t (critique → revision)")
    ax.set_ylabel("acceptance rate (share of chains)")
    ax.set_title("Acceptance rate per chain step" + ("" if series else " (no chain steps sampled)")
                 + ("\n(points offset sideways so that coinciding jobs stay visible)" if len(series) > 1 else ""), fontsize=10)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def log_to_wandb(jobs: list[Job], keys: list[str], out: Path) -> str | None:
    """Table and plots as a ``report`` run in the jobs' W&B project and group; None if they used no W&B."""
    info = next(filter(None, (read_json(j.folder / "wandb_run.json") for j in jobs)), None)
    if info is None:
        return None
    import wandb

    from dsc import tracking

    logger = tracking.WandbLogger(mode=info.get("mode") or "offline", project=info.get("project") or "dsc",
                                  group=info.get("group") or None, job_type="report", name="report", save_dir=str(out))
    run = logger.experiment
    with open(out / "report.csv") as handle:
        rows = list(csv.reader(handle))
    run.log({"report/table": wandb.Table(columns=rows[0], data=rows[1:]),
             "report/reward_gain": wandb.Image(str(out / "reward_gain.png")),
             "report/acceptance_per_step": wandb.Image(str(out / "acceptance_per_step.png"))})
    local = str(Path(run.dir).parent)
    tracking.finish(logger)
    return local


def make_report(root: Path, out: Path | None = None, use_wandb: bool = True) -> dict:
    jobs = load_jobs(root)
    out = out or root
    out.mkdir(parents=True, exist_ok=True)
    keys = varying_keys(jobs)
    write_csv(jobs, keys, out / "report.csv")
    (out / "report.md").write_text(markdown(jobs, keys, root))
    plot_reward_gain(jobs, keys, out / "reward_gain.png")
    plot_acceptance(jobs, keys, out / "acceptance_per_step.png")
    wandb_dir = log_to_wandb(jobs, keys, out) if use_wandb else None
    return {"jobs": jobs, "keys": keys, "out": out, "wandb": wandb_dir}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dsc.report", description=__doc__.split("\n")[0])
    parser.add_argument("multirun_dir", type=Path, help="a folder made by python -m dsc -m …")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: the multirun folder)")
    parser.add_argument("--no-wandb", action="store_true", help="do not log the report to W&B")
    args = parser.parse_args(argv)
    try:
        report = make_report(args.multirun_dir, args.out, use_wandb=not args.no_wandb)
    except DscError as error:
        fail(error)
    print((report["out"] / "report.md").read_text())
    print(f"wrote {report['out'] / 'report.md'}, report.csv, reward_gain.png, acceptance_per_step.png"
          + (f"; W&B run in {report['wandb']}" if report["wandb"] else ""))


if __name__ == "__main__":
    main()
