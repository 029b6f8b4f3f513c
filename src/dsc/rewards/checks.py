"""Guards every reward passes its output through, so a broken scorer fails loudly at the batch that
broke it, naming the reward, instead of a NaN silently zeroing acceptance probabilities later.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dsc.errors import DscError


def check_inputs(name: str, prompts: Sequence[str], responses: Sequence[str]) -> None:
    """Rewards score (prompt, response) pairs; unequal lengths mean the caller mis-aligned them."""
    if len(prompts) != len(responses):
        raise DscError(
            f"reward '{name}' got {len(prompts)} prompts but {len(responses)} responses; pass one prompt per response"
        )


def check_scores(name: str, values, n: int) -> torch.Tensor:
    """The reward contract made concrete: finite float32, shape (n,)."""
    scores = values if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, dtype=np.float32))
    scores = scores.detach().to(dtype=torch.float32, device="cpu")
    if scores.shape != (n,):
        raise DscError(f"reward '{name}' returned shape {tuple(scores.shape)} for {n} responses; expected ({n},)")
    bad = (~torch.isfinite(scores)).nonzero().flatten()
    if len(bad):
        raise DscError(
            f"reward '{name}' returned {len(bad)} non-finite value(s) (first at index {int(bad[0])}); "
            "fix the scorer so every response gets a finite score"
        )
    return scores
