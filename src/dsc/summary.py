"""Sampling summary: what a run's chains did, computed from the stored records alone."""

from __future__ import annotations

from collections import defaultdict
from statistics import mean
from typing import Sequence

from dsc.records import ChainStep


def final_states(records: Sequence[ChainStep]) -> dict[tuple[str, int], ChainStep]:
    """The last stored step of every chain (its current state)."""
    last: dict[tuple[str, int], ChainStep] = {}
    for r in records:
        key = (r.prompt_id, r.chain_id)
        if key not in last or r.step > last[key].step:
            last[key] = r
    return last


def summarise(records: Sequence[ChainStep], seconds: float | None = None) -> dict:
    if not records:
        return {"prompts": 0, "chains": 0, "records": 0}
    by_step: dict[int, list[ChainStep]] = defaultdict(list)
    for r in records:
        by_step[r.step].append(r)
    finals = final_states(records)
    initial = [r.reward_state for r in by_step.get(0, [])]
    tokens = sum(r.completion_tokens for r in records)
    prompt_tokens = sum(r.prompt_tokens for r in records)
    elapsed = seconds if seconds is not None else sum(r.seconds for r in records)
    steps = sorted(s for s in by_step if s > 0)
    return {
        "prompts": len({r.prompt_id for r in records}),
        "chains": len(finals),
        "records": len(records),
        "num_steps": max(by_step),
        "acceptance_rate_per_step": {s: mean(float(bool(r.accepted)) for r in by_step[s]) for s in steps},
        "revision_better_rate_per_step": {s: mean(float(r.reward_revision > r.reward_response) for r in by_step[s]) for s in steps},
        "mean_reward_per_step": {s: mean(r.reward_state for r in by_step[s]) for s in sorted(by_step)},
        "mean_reward_initial": mean(initial) if initial else float("nan"),
        "mean_reward_final": mean(r.reward_state for r in finals.values()),
        "completion_tokens": tokens,
        "prompt_tokens": prompt_tokens,
        "seconds": elapsed,
        "tokens_per_second": tokens / elapsed if elapsed > 0 else float("nan"),
    }


def per_step(summary: dict | None, series: str = "acceptance_rate_per_step") -> dict[int, float]:
    """A per-step series of a summary as {step: value}, whether fresh or read back from JSON (string keys)."""
    return {int(k): float(v) for k, v in ((summary or {}).get(series) or {}).items()}


def format_summary(s: dict, title: str = "sampling summary") -> str:
    if not s.get("records"):
        return f"{title}: no records"
    lines = [f"── {title} " + "─" * max(0, 60 - len(title)),
             f"prompts {s['prompts']}   chains {s['chains']}   steps K={s['num_steps']}   records {s['records']}",
             f"mean reward  x₀ {s['mean_reward_initial']:+.4f}  →  final {s['mean_reward_final']:+.4f}   "
             f"(Δ {s['mean_reward_final'] - s['mean_reward_initial']:+.4f})"]
    for step, rate in s["acceptance_rate_per_step"].items():
        lines.append(f"step {step}: acceptance {rate:6.1%}   revision better {s['revision_better_rate_per_step'][step]:6.1%}"
                     f"   mean reward of state {s['mean_reward_per_step'][step]:+.4f}")
    lines.append(f"tokens generated {s['completion_tokens']:,}  (prompt side {s['prompt_tokens']:,})   "
                 f"{s['seconds']:.1f} s   {s['tokens_per_second']:.1f} tok/s")
    return "\n".join(lines)
