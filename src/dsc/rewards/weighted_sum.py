"""Composition as a reward: r = Σᵢ wᵢ rᵢ over named component rewards.

Combining scorers is how one guards against gaming a single one (VADER's positive words, a refusal
phrase pasted onto harmful text). Because the sum is itself a Reward, the sampler and acceptance rule
never know a reward is composite; ``component_scores`` exposes the parts for logging.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from dsc.errors import DscError
from dsc.rewards.base import Reward
from dsc.rewards.checks import check_inputs, check_scores


class WeightedSum:
    """Σ wᵢ rᵢ on the components' raw scales; success = sum > ``success_threshold``."""

    def __init__(self, components: Mapping[str, Reward], weights: Mapping[str, float], success_threshold: float = 0.0,
                 name: str = "weighted_sum"):
        self.name = name
        if not components:
            raise DscError("reward.components is empty; give at least one component reward")
        if set(components) != set(weights):
            raise DscError(
                f"reward.weights has keys {sorted(weights)} but reward.components has {sorted(components)}; "
                "give exactly one weight per component"
            )
        self.components = dict(components)
        self.weights = {key: float(weights[key]) for key in components}
        self.success_threshold = float(success_threshold)

    def component_scores(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        """Each component's checked raw scores, keyed as in ``components``."""
        check_inputs(self.name, prompts, responses)
        return {
            key: check_scores(f"{self.name}.{key}", reward.score(prompts, responses), len(responses))
            for key, reward in self.components.items()
        }

    def combine(self, parts: Mapping[str, torch.Tensor]) -> torch.Tensor:
        total = sum(self.weights[key] * parts[key].double() for key in self.components)
        return total.float()

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return check_scores(self.name, self.combine(self.component_scores(prompts, responses)), len(responses))

    def success(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards > self.success_threshold
