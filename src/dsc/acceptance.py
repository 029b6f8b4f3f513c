"""Acceptance rules: pure functions of rewards (and, for exact MH, proposal log-probs) → α.

The sampler draws u ~ U[0,1) from the step's own seed and accepts iff u < α, recording both, so every
decision can be re-checked from disk. β is the single top-level temperature of the target
p(x|c,r) ∝ p(x|c)·exp(r(c,x)/β); rules receive it from the config and are the only place it divides a
reward during sampling.
"""

from __future__ import annotations

import torch

from dsc.errors import DscError


class AcceptanceRule:
    name = "rule"
    needs_logprobs = False
    """True when α needs the teacher-forced log-probs of mh_exact (one extra critique turn per step)."""

    def __call__(self, reward: torch.Tensor, reward_new: torch.Tensor,
                 log_q_ratio: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


def _check_beta(beta: float) -> float:
    if not isinstance(beta, (int, float)) or beta <= 0:
        raise DscError(f"beta={beta} must be > 0 (the reward temperature); e.g. beta=0.5")
    return float(beta)


class Metropolis(AcceptanceRule):
    """The paper's rule: α = min(1, exp((r' − r)/β)); ties (Δ = 0) accept.

    A heuristic: the critique→revision proposal is not symmetric (q(x'|x) ≠ q(x|x')) and the prior
    ratio p(x'|c)/p(x|c) is left out, so the chain does not target the posterior exactly. It is exact
    only for an independence proposal drawing from p(x|c) itself. Use ``mh_exact`` for the exact chain.
    """

    name = "metropolis"

    def __init__(self, beta: float):
        self.beta = _check_beta(beta)

    def __call__(self, reward, reward_new, log_q_ratio=None):
        return torch.exp(torch.clamp((reward_new - reward) / self.beta, max=0.0))


class ExactMetropolisHastings(AcceptanceRule):
    """Metropolis–Hastings on the space augmented with the critique (beyond the paper):

        α = min(1, [p(x'|c) e^{r'/β} p(z'|c,x') p(x|c,x',z')] / [p(x|c) e^{r/β} p(z|c,x) p(x'|c,x,z)])

    with z' a critique sampled for x'. ``log_q_ratio`` carries every log-prob term (teacher-forced
    under the LLM; proposal terms at the sampling temperature), the rule adds (r' − r)/β. Exact for
    the target p(x|c)·e^{r/β} when sampling uses top_p = 1; costs one extra critique turn and six
    scoring passes per step.
    """

    name = "mh_exact"
    needs_logprobs = True

    def __init__(self, beta: float):
        self.beta = _check_beta(beta)

    def __call__(self, reward, reward_new, log_q_ratio=None):
        if log_q_ratio is None:
            raise ValueError("mh_exact needs log_q_ratio")
        return torch.exp(torch.clamp((reward_new - reward) / self.beta + log_q_ratio, max=0.0))


class Greedy(AcceptanceRule):
    """Accept iff r' > r (the paper code's filter); ties reject. β plays no part."""

    name = "greedy"

    def __call__(self, reward, reward_new, log_q_ratio=None):
        return (reward_new > reward).to(torch.float64)


class Threshold(AcceptanceRule):
    """Accept iff r' ≥ τ, whatever the current state scores."""

    name = "threshold"

    def __init__(self, tau: float):
        self.tau = float(tau)

    def __call__(self, reward, reward_new, log_q_ratio=None):
        return (reward_new >= self.tau).to(torch.float64)


class Always(AcceptanceRule):
    """Accept every revision: Self-Refine-like, the paper's "no acceptance" ablation."""

    name = "always"

    def __call__(self, reward, reward_new, log_q_ratio=None):
        return torch.ones_like(reward_new, dtype=torch.float64)
