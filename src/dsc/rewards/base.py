"""The reward seam: ``score(prompts, responses) -> tensor`` and nothing else.

Rewards are raw scores (higher is better); the temperature β lives in one top-level config value and
is applied only by the acceptance rule and the divergences, never here.
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import torch


@runtime_checkable
class Reward(Protocol):
    name: str

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """One float32 reward per (prompt, response) pair, shape (len(responses),)."""
        ...

    def success(self, rewards: torch.Tensor) -> torch.Tensor:
        """Boolean per reward: did the response achieve the task's goal (for success rates)?"""
        ...
