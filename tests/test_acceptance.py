"""Acceptance rules against hand-computed values, and long-run histograms of toy chains (χ²)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from dsc.acceptance import Always, ExactMetropolisHastings, Greedy, Metropolis, Threshold
from dsc.errors import DscError

t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731


def test_metropolis_hand_computed():
    alpha = Metropolis(beta=0.5)(t(1.0), t(0.0))
    assert alpha.item() == pytest.approx(math.exp(-2), abs=1e-12)
    assert alpha.item() == pytest.approx(0.1353, abs=1e-4)
    assert Metropolis(0.5)(t(0.0), t(3.0)).item() == 1.0


def test_ties_accept_for_metropolis_and_reject_for_greedy():
    assert Metropolis(0.1)(t(0.3), t(0.3)).item() == 1.0
    assert Greedy()(t(0.3), t(0.3)).item() == 0.0
    assert Greedy()(t(0.3), t(0.31)).item() == 1.0


def test_threshold_and_always():
    assert Threshold(tau=0.5)(t(0.9, 0.9), t(0.5, 0.49)).tolist() == [1.0, 0.0]
    assert Always()(t(1.0), t(-5.0)).item() == 1.0


def test_beta_must_be_positive():
    with pytest.raises(DscError, match=r"beta=0 must be > 0"):
        Metropolis(beta=0)
    with pytest.raises(DscError, match=r"beta=-1"):
        ExactMetropolisHastings(beta=-1)


def test_mh_exact_adds_the_log_ratio():
    alpha = ExactMetropolisHastings(beta=1.0)(t(0.0), t(0.0), t(-1.5))
    assert alpha.item() == pytest.approx(math.exp(-1.5))


# A toy world: 5 answers with prior p and reward r; the target is p·e^{r/β}/Z.
P = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
R = np.array([0.0, 1.0, -1.0, 2.0, 0.5])
BETA = 0.8
TARGET = P * np.exp(R / BETA) / (P * np.exp(R / BETA)).sum()


CHAINS, STEPS = 4000, 60  # many independent chains, their final states are independent draws for χ²


def _chi2_pvalue(states: np.ndarray) -> float:
    counts = np.bincount(states, minlength=len(P))
    return chisquare(counts, TARGET * counts.sum()).pvalue


def test_metropolis_with_independence_proposal_targets_the_posterior():
    rng = np.random.default_rng(0)
    rule, x = Metropolis(BETA), np.zeros(CHAINS, dtype=int)
    for _ in range(STEPS):
        proposal = rng.choice(len(P), p=P, size=CHAINS)  # independence proposal from the prior: exact here
        alpha = rule(torch.from_numpy(R[x]), torch.from_numpy(R[proposal])).numpy()
        x = np.where(rng.random(CHAINS) < alpha, proposal, x)
    assert _chi2_pvalue(x) > 1e-3


def test_metropolis_is_biased_under_an_asymmetric_proposal_but_mh_exact_is_not():
    """Critique z ∈ {0,1} given x; revision x' given (x, z) strongly biased towards answer 0."""
    rng = np.random.default_rng(1)
    n = len(P)
    q_z = np.array([[0.7, 0.3], [0.2, 0.8], [0.5, 0.5], [0.9, 0.1], [0.4, 0.6]])  # q(z | x)
    q_x = np.zeros((n, 2, n))  # q(x' | x, z)
    for s in range(n):
        q_x[s, 0] = 0.05
        q_x[s, 0, (s + 1) % n] += 1 - 0.05 * n
        q_x[s, 1] = np.array([0.6, 0.1, 0.1, 0.1, 0.1])

    def run(rule, exact: bool) -> np.ndarray:
        x = np.zeros(CHAINS, dtype=int)
        for _ in range(STEPS):
            z = (rng.random(CHAINS) < q_z[x, 1]).astype(int)
            cdf = np.cumsum(q_x[x, z], axis=1)
            x_new = np.minimum((rng.random(CHAINS)[:, None] > cdf).sum(1), n - 1)
            z_back = (rng.random(CHAINS) < q_z[x_new, 1]).astype(int)
            log_ratio = (np.log(P[x_new]) - np.log(P[x]) + np.log(q_z[x_new, z_back]) + np.log(q_x[x_new, z_back, x])
                         - np.log(q_z[x, z]) - np.log(q_x[x, z, x_new]))
            alpha = rule(torch.from_numpy(R[x]), torch.from_numpy(R[x_new]),
                         torch.from_numpy(log_ratio) if exact else None).numpy()
            x = np.where(rng.random(CHAINS) < alpha, x_new, x)
        return x

    assert _chi2_pvalue(run(ExactMetropolisHastings(BETA), exact=True)) > 1e-3
    assert _chi2_pvalue(run(Metropolis(BETA), exact=False)) < 1e-6  # the paper's heuristic is not exact
