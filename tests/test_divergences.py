"""Every divergence against a value computed by hand on tiny tensors, plus the importance weights of
``weighted_forward_kl`` built from hand-made chain records.

Conventions under test (see dsc.distill.divergences): ``logp`` is the summed response log-prob of each
sequence; losses are means over sequences divided by ``token_scale``; DPO batches stack chosen rows
then rejected rows; reverse_kl groups k consecutive rows per prompt.
"""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dsc.distill.divergences import DPO, ForwardKL, ReverseKL, WeightedForwardKL
from dsc.distill.examples import importance_weighted_initial
from dsc.errors import DscError
from dsc.paths import config_dir
from dsc.records import ChainStep


def step0(pid: str, chain: int, text: str, reward: float) -> ChainStep:
    return ChainStep(prompt_id=pid, chain_id=chain, step=0, prompt=f"prompt {pid}", response=text,
                     reward_response=reward, state=text, reward_state=reward)


# ── forward_kl ─────────────────────────────────────────────────────────────────────────────────
def test_forward_kl_is_mean_summed_nll_over_token_scale():
    # two sequences with per-token log-probs summed by hand: (−1 − 2) and (−0.5)
    logp = torch.tensor([-1.0 - 2.0, -0.5], requires_grad=True)
    loss, metrics = ForwardKL(token_scale=10.0)(logp, {})
    assert loss.item() == pytest.approx((3.0 + 0.5) / 2 / 10.0)
    assert metrics["nll"].item() == pytest.approx((3.0 + 0.5) / 2 / 10.0)
    loss.backward()
    # sequence-level: every sequence gets the same gradient, whatever its length
    assert torch.allclose(logp.grad, torch.full((2,), -1 / (2 * 10.0)))


def test_forward_kl_matches_token_level_cross_entropy_sum():
    """logp = Σ over a sequence's response tokens, so forward_kl = summed token NLL / n_seq / scale
    (not a per-token mean, which would up-weight short answers)."""
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    targets = torch.tensor([[1, 2, 3, 4], [0, 0, 2, 1]])
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]])  # 4 response tokens, then 2
    token_logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    logp = (token_logp * mask).sum(-1)
    loss, _ = ForwardKL(token_scale=5.0)(logp, {})
    nll = torch.nn.functional.cross_entropy(logits[mask.bool()], targets[mask.bool()], reduction="sum")
    assert loss.item() == pytest.approx(nll.item() / 2 / 5.0, rel=1e-6)
    per_token_mean = (-(token_logp * mask).sum(-1) / mask.sum(-1)).mean() / 5.0
    assert loss.item() != pytest.approx(per_token_mean.item(), rel=1e-3)


# ── weighted_forward_kl and its importance weights ─────────────────────────────────────────────
def test_importance_weights_by_hand():
    beta = 0.5
    rewards_a = [0.0, 0.5, 1.0]
    records = [step0("a", i, f"answer a{i}", r) for i, r in enumerate(rewards_a)]
    records += [step0("b", 0, "answer b0", 3.0), step0("b", 1, "answer b1", 3.0)]
    # later steps and empty proposals must not enter: only x₀ ~ p(x|c) may be importance-weighted
    records.append(ChainStep(prompt_id="a", chain_id=0, step=1, prompt="prompt a", response="answer a0",
                             reward_response=0.0, state="rev", reward_state=9.0, revision="rev",
                             reward_revision=9.0, alpha=1.0, u=0.1, accepted=True))
    records.append(step0("c", 0, "   ", 5.0))
    examples = importance_weighted_initial(records, beta)
    by_prompt: dict[str, list] = {}
    for e in examples:
        by_prompt.setdefault(e.prompt_id, []).append(e)
    assert set(by_prompt) == {"a", "b"}
    assert [e.response for e in by_prompt["a"]] == ["answer a0", "answer a1", "answer a2"]

    raw = [math.exp(r / beta) for r in rewards_a]
    expected = [3 * w / sum(raw) for w in raw]  # ∝ exp(r/β), scaled to average 1 per prompt
    assert [e.weight for e in by_prompt["a"]] == pytest.approx(expected)
    assert [e.weight for e in by_prompt["b"]] == pytest.approx([1.0, 1.0])  # ties: uniform
    for rows in by_prompt.values():
        normalised = [e.weight / len(rows) for e in rows]
        assert sum(normalised) == pytest.approx(1.0)
    # larger reward, larger weight; ratio of two weights is exp(Δr/β)
    assert by_prompt["a"][2].weight / by_prompt["a"][0].weight == pytest.approx(math.exp(1.0 / beta))


def test_importance_weights_stable_for_large_rewards():
    examples = importance_weighted_initial([step0("a", 0, "x", 1000.0), step0("a", 1, "y", 999.0)], beta=0.01)
    assert all(math.isfinite(e.weight) for e in examples)
    assert sum(e.weight for e in examples) == pytest.approx(2.0)


def test_importance_weights_need_proposals():
    with pytest.raises(DscError, match="weighted_forward_kl") as info:
        importance_weighted_initial([step0("a", 0, "  ", 1.0)], beta=1.0)
    assert "\n" not in str(info.value)


def test_weighted_forward_kl_hand_value_and_detached_weights():
    examples = importance_weighted_initial([step0("a", 0, "x", 0.0), step0("a", 1, "y", 1.0)], beta=1.0)
    weight = torch.tensor([e.weight for e in examples], requires_grad=True)
    logp = torch.tensor([-4.0, -2.0], requires_grad=True)
    loss, metrics = WeightedForwardKL(token_scale=2.0)(logp, {"weight": weight})
    w0, w1 = 2 / (1 + math.e), 2 * math.e / (1 + math.e)
    assert loss.item() == pytest.approx((w0 * 4.0 + w1 * 2.0) / 2 / 2.0)
    assert metrics["nll"].item() == pytest.approx(3.0)
    loss.backward()
    assert weight.grad is None  # the weights are constants of the loss
    assert logp.grad.tolist() == pytest.approx([-w0 / 4.0, -w1 / 4.0])


def test_weighted_forward_kl_with_unit_weights_is_forward_kl():
    logp = torch.tensor([-3.0, -1.0, -7.5])
    weighted, _ = WeightedForwardKL(token_scale=3.0)(logp, {"weight": torch.ones(3)})
    plain, _ = ForwardKL(token_scale=3.0)(logp, {})
    assert weighted.item() == pytest.approx(plain.item())


# ── dpo ────────────────────────────────────────────────────────────────────────────────────────
def test_dpo_is_log2_when_policy_equals_reference():
    logp = torch.tensor([-5.0, -7.0, -6.0, -2.0])  # chosen rows, then rejected rows
    loss, metrics = DPO(beta_dpo=0.1)(logp, {}, logp.clone())
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["margin"].item() == 0.0


def test_dpo_hand_value_and_gradient_sign():
    beta = 0.5
    logp = torch.tensor([-3.0, -6.0], requires_grad=True)  # chosen, rejected
    ref = torch.tensor([-4.0, -5.0])
    loss, metrics = DPO(beta_dpo=beta)(logp, {}, ref)
    margin = beta * ((-3.0 - -4.0) - (-6.0 - -5.0))  # 0.5 · (1 − (−1)) = 1
    assert loss.item() == pytest.approx(math.log1p(math.exp(-margin)))
    assert metrics["margin"].item() == pytest.approx(margin)
    assert metrics["pair_accuracy"].item() == 1.0
    loss.backward()
    assert logp.grad[0] < 0 < logp.grad[1]  # descent raises the chosen, lowers the rejected
    # d loss / d margin = −σ(−margin)
    assert logp.grad[0].item() == pytest.approx(-beta / (1 + math.exp(margin)))


def test_dpo_reference_is_detached():
    logp = torch.tensor([-3.0, -6.0], requires_grad=True)
    ref = torch.tensor([-4.0, -5.0], requires_grad=True)
    loss, _ = DPO()(logp, {}, ref)
    loss.backward()
    assert ref.grad is None


# ── reverse_kl ─────────────────────────────────────────────────────────────────────────────────
def test_rloo_advantages_by_hand():
    values = torch.tensor([1.0, 2.0, 3.0, 10.0, 0.0, 5.0])
    adv = ReverseKL.rloo(values, 3)
    expected = [1 - 2.5, 2 - 2.0, 3 - 1.5, 10 - 2.5, 0 - 7.5, 5 - 5.0]
    assert adv.tolist() == pytest.approx(expected)
    assert adv.view(2, 3).sum(1).tolist() == pytest.approx([0.0, 0.0])


def test_rloo_groups_sum_to_zero_on_random_values():
    torch.manual_seed(0)
    values = torch.randn(5 * 4, dtype=torch.float64)
    adv = ReverseKL.rloo(values, 4).view(5, 4)
    assert torch.allclose(adv.sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    # Aᵢ = Rᵢ − mean_{j≠i} Rⱼ, element by element
    grouped = values.view(5, 4)
    for g in range(5):
        for i in range(4):
            others = torch.cat([grouped[g, :i], grouped[g, i + 1:]])
            assert adv[g, i].item() == pytest.approx((grouped[g, i] - others.mean()).item())


def test_reverse_kl_hand_value_and_gradient():
    beta, k = 0.5, 2
    reward = torch.tensor([1.0, 0.0, 0.2, 0.6])
    logp = torch.tensor([-2.0, -3.0, -1.0, -4.0], requires_grad=True)
    ref = torch.tensor([-2.5, -2.0, -1.0, -3.0])
    loss, metrics = ReverseKL(beta=beta, samples_per_prompt=k, token_scale=2.0)(logp, {"reward": reward}, ref)
    # shaped Rᵢ = rᵢ − β(log π − log p₀), by hand
    shaped = [1.0 - 0.5 * 0.5, 0.0 - 0.5 * -1.0, 0.2 - 0.0, 0.6 - 0.5 * -1.0]  # [0.75, 0.5, 0.2, 1.1]
    adv = [shaped[0] - shaped[1], shaped[1] - shaped[0], shaped[2] - shaped[3], shaped[3] - shaped[2]]
    lp = [-2.0, -3.0, -1.0, -4.0]
    expected = -sum(a * v for a, v in zip(adv, lp)) / 4 / (beta * 2.0)
    assert loss.item() == pytest.approx(expected)
    assert metrics["kl"].item() == pytest.approx((0.5 - 1.0 + 0.0 - 1.0) / 4)
    loss.backward()
    # REINFORCE: the shaped reward is a constant of the loss, so d loss / d log πᵢ = −Aᵢ / (n β s)
    assert logp.grad.tolist() == pytest.approx([-a / (4 * beta * 2.0) for a in adv])


def test_reverse_kl_needs_two_samples_per_prompt():
    with pytest.raises(DscError, match="samples_per_prompt"):
        ReverseKL(beta=1.0, samples_per_prompt=1)


# ── configs ────────────────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize("path", sorted((config_dir() / "divergence").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_divergence_config_instantiates(path):
    node = OmegaConf.load(path)
    node = OmegaConf.merge(OmegaConf.create({"beta": 0.1}), {"d": node}).d  # resolve ${beta}
    divergence = instantiate(node)
    assert divergence.name == path.stem
    assert divergence.data in ("targets", "weighted_initial", "pairs", "prompts")
