"""P4: how much of the chain's reward gain one distilled-model generation keeps, and at what token cost.

    python bench/amortisation.py outputs/runs/<run> [outputs/multirun/<sweep> ...]

Reads ``results.json`` of finished runs (the evaluation stage; folders are searched recursively). Per
run and scorer: gain_fraction = (distilled − base) / (chain − base) of the mean reward on the test
prompts, with the paired-bootstrap CIs of both gains from the run; token_fraction = distilled tokens per
prompt / chain tokens per prompt (every turn of every chain step). Per task: gains and tokens are
averaged over the runs first, then divided. JSON in bench/results/amortisation.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_json  # noqa: E402


def find_results(paths: list[str]) -> list[Path]:
    found = []
    for raw in paths:
        path = Path(raw)
        if path.is_file() and path.name == "results.json":
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.rglob("results.json")))
        else:
            sys.exit(f"bench/amortisation.py: {raw} is neither a run folder nor a results.json")
    return found


def run_rows(path: Path) -> list[dict]:
    results = json.loads(path.read_text())
    arms = results.get("arms", {})
    if not all(a in arms for a in ("base", "distilled", "chain")):
        return []
    rows = []
    for scorer, info in results.get("scorers", {}).items():
        key = f"reward/{scorer}"
        if not all(key in arms[a] for a in ("base", "distilled", "chain")):
            continue
        base, distilled, chain = (arms[a][key]["mean"] for a in ("base", "distilled", "chain"))
        gain_d, gain_c = distilled - base, chain - base
        diffs = results.get("differences", {})
        rows.append({
            "run": str(path.parent), "task": results.get("task"), "scorer": scorer,
            "trained_on": scorer == results.get("trained_on"), "independent": info.get("independent"),
            "n_prompts": results.get("n_prompts"), "gain_distilled": gain_d, "gain_chain": gain_c,
            "gain_distilled_ci": _ci(diffs.get("distilled-base", {}).get(scorer)),
            "gain_chain_ci": _ci(diffs.get("chain-base", {}).get(scorer)),
            "gain_fraction": gain_d / gain_c if gain_c else None,
            "tokens_distilled": arms["distilled"]["tokens_per_prompt"], "tokens_chain": arms["chain"]["tokens_per_prompt"],
            "token_fraction": arms["distilled"]["tokens_per_prompt"] / arms["chain"]["tokens_per_prompt"]
            if arms["chain"]["tokens_per_prompt"] else None,
        })
    return rows


def _ci(entry) -> list[float] | None:
    return [entry["ci_low"], entry["ci_high"]] if entry else None


def per_task(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["task"], row["scorer"])].append(row)
    out = []
    for (task, scorer), items in sorted(groups.items()):
        mean = lambda k: sum(r[k] for r in items) / len(items)  # noqa: E731
        gain_c, tokens_c = mean("gain_chain"), mean("tokens_chain")
        out.append({"task": task, "scorer": scorer, "trained_on": items[0]["trained_on"], "runs": len(items),
                    "gain_distilled": mean("gain_distilled"), "gain_chain": gain_c,
                    "gain_fraction": mean("gain_distilled") / gain_c if gain_c else None,
                    "token_fraction": mean("tokens_distilled") / tokens_c if tokens_c else None})
    return out


def fmt(value, spec=".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders, multirun folders or results.json files")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    rows = [row for path in find_results(args.runs) for row in run_rows(path)]
    if not rows:
        sys.exit("bench/amortisation.py: no results.json with base, distilled and chain arms under " + " ".join(args.runs))
    tasks = per_task(rows)
    print(f"{'task':<10}{'scorer':<20}{'runs':>5}{'Δ distilled':>13}{'Δ chain':>10}{'gain frac':>11}{'token frac':>12}")
    for t in tasks:
        flag = " (trained on)" if t["trained_on"] else ""
        print(f"{t['task']:<10}{t['scorer']:<20}{t['runs']:>5}{t['gain_distilled']:>13.3f}{t['gain_chain']:>10.3f}"
              f"{fmt(t['gain_fraction']):>11}{fmt(t['token_fraction']):>12}{flag}")
    path = write_json("amortisation.json", {"runs": rows, "tasks": tasks}, args.out)
    print(f"wrote {path}")
    for t in tasks:
        if t["trained_on"]:
            print(f"P4 task={t['task']} gain_fraction={fmt(t['gain_fraction'], '.3f')} "
                  f"token_fraction={fmt(t['token_fraction'], '.3f')}")


if __name__ == "__main__":
    main()
