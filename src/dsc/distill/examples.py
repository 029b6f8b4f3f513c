"""Training sets built from chain records.

The student always sees only the original prompt c — never a critique — and must answer it directly:
distillation amortises the chain into one generation.

- ``final_state``: x_K of every chain, the MCMC samples of the posterior (default for metropolis and
  mh_exact);
- ``accepted_only``: x_K of chains that accepted at least one revision (the paper's filter; default for
  greedy);
- prior draws x₀ with self-normalised importance weights ∝ exp(r(c,x₀)/β) per prompt
  (``weighted_forward_kl``: valid only because x₀ ~ p(x|c));
- preference pairs ordered by reward, ties dropped (``dpo``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Sequence

from dsc.errors import DscError
from dsc.records import ChainStep
from dsc.summary import final_states

TARGETS = ("final_state", "accepted_only")


@dataclass
class Example:
    """One (prompt, response) to fit."""

    prompt_id: str
    prompt: str
    response: str
    reward: float
    weight: float = 1.0
    """Importance weight, scaled so that a prompt's weights average 1 (1 for unweighted targets)."""


@dataclass
class Pair:
    """One preference pair for DPO, chosen by reward."""

    prompt_id: str
    prompt: str
    chosen: str
    rejected: str
    reward_chosen: float
    reward_rejected: float


def default_target(acceptance_name: str) -> str:
    return "accepted_only" if acceptance_name in ("greedy", "threshold") else "final_state"


def chain_targets(records: Sequence[ChainStep], target: str) -> list[Example]:
    if target not in TARGETS:
        raise DscError(f"distill.target={target} is not a target; use final_state or accepted_only")
    accepted = defaultdict(bool)
    for r in records:
        accepted[(r.prompt_id, r.chain_id)] |= bool(r.accepted)
    finals = final_states(records)
    out = [Example(r.prompt_id, r.prompt, r.state, r.reward_state)
           for key, r in finals.items() if target == "final_state" or accepted[key]]
    out = [e for e in out if e.response.strip()]
    if not out:
        raise DscError(f"distill.target={target} leaves an empty training set ({len(finals)} chains, none usable); "
                       "sample more chains/steps or use distill.target=final_state")
    return out


def importance_weighted_initial(records: Sequence[ChainStep], beta: float) -> list[Example]:
    by_prompt: dict[str, list[ChainStep]] = defaultdict(list)
    for r in records:
        if r.step == 0 and r.response.strip():
            by_prompt[r.prompt_id].append(r)
    out = []
    for rows in by_prompt.values():
        top = max(r.reward_response for r in rows)
        raw = [math.exp((r.reward_response - top) / beta) for r in rows]
        total = sum(raw)
        for r, w in zip(rows, raw):
            out.append(Example(r.prompt_id, r.prompt, r.response, r.reward_response, weight=len(rows) * w / total))
    if not out:
        raise DscError("divergence=weighted_forward_kl found no step-0 proposals in the sample store; run stage=sample first")
    return out


def preference_pairs(records: Sequence[ChainStep], source: str = "final_vs_initial") -> list[Pair]:
    pairs: list[Pair] = []
    if source == "final_vs_initial":
        initial = {(r.prompt_id, r.chain_id): r for r in records if r.step == 0}
        for key, last in final_states(records).items():
            first = initial.get(key)
            if first is not None:
                pairs.append(_ordered(last.prompt_id, last.prompt, last.state, last.reward_state,
                                      first.response, first.reward_response))
    elif source == "revisions":
        for r in records:
            if r.step > 0 and r.revision is not None:
                pairs.append(_ordered(r.prompt_id, r.prompt, r.revision, r.reward_revision, r.response, r.reward_response))
    else:
        raise DscError(f"divergence.pairs={source} is not a pair source; use final_vs_initial or revisions")
    pairs = [p for p in pairs if p is not None]
    if not pairs:
        raise DscError(f"divergence=dpo has no usable pairs (divergence.pairs={source}: every pair ties on reward or repeats "
                       "its text); sample more chains or steps, or use divergence=forward_kl")
    return pairs


def _ordered(pid, prompt, a, ra, b, rb) -> Pair | None:
    if ra == rb or a.strip() == b.strip() or not a.strip() or not b.strip():
        return None
    if ra > rb:
        return Pair(pid, prompt, a, b, ra, rb)
    return Pair(pid, prompt, b, a, rb, ra)
