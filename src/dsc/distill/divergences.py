"""Divergences between the posterior and the student, one class each, one call signature:

    loss, metrics = divergence(logp, batch, ref_logp)

``logp`` holds the student's summed log-probability of each sequence's response tokens (prompt and
padding masked out), ``ref_logp`` the same under the frozen base (adapters off) when
``needs_reference``; ``batch`` carries the per-sequence fields a divergence needs (weights, rewards,
group ids). Normalisation: losses are sequence-level (sums over response tokens) averaged over
sequences and divided by ``token_scale`` (a constant, default 1), so no example is re-weighted by its
length — a per-token mean would up-weight short answers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dsc.errors import DscError


class Divergence:
    name = "divergence"
    needs_reference = False
    on_policy = False
    """True: the module samples from the current student each step (no chain samples are used)."""
    data = "targets"
    """What the DataModule builds: 'targets', 'weighted_initial', 'pairs' or 'prompts'."""

    def __init__(self, token_scale: float = 1.0):
        self.token_scale = float(token_scale)


class ForwardKL(Divergence):
    """KL(posterior ‖ student) = −E_posterior[log p_θ(x|c)] + const: sequence NLL of the chain's samples
    (SFT on posterior samples)."""

    name = "forward_kl"

    def __call__(self, logp, batch, ref_logp=None):
        nll = -logp.mean() / self.token_scale
        return nll, {"nll": nll.detach()}


class WeightedForwardKL(Divergence):
    """Self-normalised importance sampling of the posterior from prior draws x₀ ~ p(x|c): weights
    ∝ exp(r(c,x₀)/β) over a prompt's chains, detached, scaled to average 1 per prompt. Critique-free: a
    baseline that shows what the chain adds."""

    name = "weighted_forward_kl"
    data = "weighted_initial"

    def __call__(self, logp, batch, ref_logp=None):
        weights = batch["weight"].detach().to(logp.dtype)
        loss = -(weights * logp).mean() / self.token_scale
        return loss, {"nll": (-logp.mean()).detach(), "weight_max": weights.max()}


class DPO(Divergence):
    """Direct preference optimisation on reward-ordered pairs: −log σ(β_dpo[Δ_chosen − Δ_rejected]) with
    Δ = log π_θ − log π_ref and π_ref the base model. The batch stacks chosen rows then rejected rows.
    At LoRA initialisation π_θ = π_ref, so the loss is log 2."""

    name = "dpo"
    needs_reference = True
    data = "pairs"

    def __init__(self, beta_dpo: float = 0.1, token_scale: float = 1.0, pairs: str = "final_vs_initial"):
        super().__init__(token_scale)
        self.beta_dpo = float(beta_dpo)
        self.pairs = pairs

    def __call__(self, logp, batch, ref_logp=None):
        half = logp.shape[0] // 2
        delta = logp - ref_logp.detach()
        margin = self.beta_dpo * (delta[:half] - delta[half:])
        loss = -F.logsigmoid(margin).mean()
        return loss, {"margin": margin.mean().detach(), "pair_accuracy": (margin > 0).float().mean()}


class ReverseKL(Divergence):
    """KL(π_θ ‖ posterior) = −(1/β)·E_πθ[r − β·log(π_θ/p₀)] + log Z: on-policy, KL-regularised reward
    maximisation. Each step samples k ≥ 2 answers per prompt from the current student and uses the
    REINFORCE leave-one-out (RLOO) advantage Aᵢ = Rᵢ − mean_{j≠i} Rⱼ of the shaped reward
    Rᵢ = r(c,yᵢ) − β·(log π_θ(yᵢ|c) − log p₀(yᵢ|c)). Uses no chain samples — only prompts."""

    name = "reverse_kl"
    needs_reference = True
    on_policy = True
    data = "prompts"

    def __init__(self, beta: float, samples_per_prompt: int = 4, token_scale: float = 1.0):
        super().__init__(token_scale)
        if samples_per_prompt < 2:
            raise DscError(f"divergence.samples_per_prompt={samples_per_prompt} is too small for reverse_kl; "
                           "use >= 2 (the leave-one-out baseline needs two samples per prompt)")
        self.beta = float(beta)
        self.k = int(samples_per_prompt)

    @staticmethod
    def rloo(values: torch.Tensor, k: int) -> torch.Tensor:
        """Leave-one-out advantages within consecutive groups of k; each group sums to 0."""
        grouped = values.view(-1, k)
        baseline = (grouped.sum(1, keepdim=True) - grouped) / (k - 1)
        return (grouped - baseline).reshape(-1)

    def __call__(self, logp, batch, ref_logp=None):
        shaped = batch["reward"].to(logp.dtype) - self.beta * (logp.detach() - ref_logp.detach())
        advantage = self.rloo(shaped, self.k)
        loss = -(advantage * logp).mean() / (self.beta * self.token_scale)
        return loss, {"reward": batch["reward"].mean(), "kl": (logp - ref_logp).detach().mean(), "shaped": shaped.mean()}
