"""Printing and plotting one run's evaluation."""

from __future__ import annotations

from pathlib import Path


def format_ci(stat: dict) -> str:
    """mean [95 % CI low, high] of a {mean, ci_low, ci_high} statistic, as every table prints it."""
    return f"{stat['mean']:+.3f} [{stat['ci_low']:+.3f}, {stat['ci_high']:+.3f}]"


def results_table(results: dict) -> str:
    scorers = list(results["scorers"])
    lines = [f"── evaluation: task={results['task']}  n={results['n_prompts']} test prompts  trained on {results['trained_on']}"]
    header = f"{'arm':<10}" + "".join(f"{'reward/' + s:>34}{'success/' + s:>30}" for s in scorers)
    lines.append(header + f"{'tok/prompt':>12}{'s/prompt':>10}{'ppl':>8}{'dist-2':>8}{'rep':>6}")
    for arm, e in results["arms"].items():
        row = f"{arm:<10}" + "".join(f"{format_ci(e['reward/' + s]):>34}{format_ci(e['success/' + s]):>30}" for s in scorers)
        row += (f"{e['tokens_per_prompt']:>12.1f}{e['seconds_per_prompt']:>10.2f}{e['perplexity_under_base']:>8.2f}"
                f"{e['distinct_2']:>8.3f}{e['repetition_rate']:>6.2f}")
        lines.append(row)
    for name, diffs in results["differences"].items():
        lines.append(f"{name:<18}" + "   ".join(f"{s}: {format_ci(d)}" for s, d in diffs.items()))
    if "over_refusal" in results:
        lines.append("over-refusal on benign prompts: " + "   ".join(f"{a}: {format_ci(v)}" for a, v in results["over_refusal"].items()))
    return "\n".join(lines)


def plot_rewards(per_prompt: dict[str, dict[str, list[float]]], scorer: str, path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(per_prompt)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    data = [per_prompt[a][scorer] for a in arms]
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(arms) + 1), arms)
    for i, values in enumerate(data, start=1):
        ax.scatter([i + (j % 7 - 3) * 0.03 for j in range(len(values))], values, s=10, alpha=0.5, color="tab:blue")
    ax.set_ylabel(f"reward ({scorer})")
    ax.set_xlabel("arm (n = %d test prompts each)" % len(data[0]))
    ax.set_title(f"{task}: reward per test prompt by arm")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
