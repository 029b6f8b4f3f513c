"""Seeds derived from (run seed, prompt id, chain id, step, turn).

Every random choice of a chain comes from a seed derived from its coordinates, never from a shared
global stream, so a chain's samples do not depend on which chains share its batch, on how prompts are
sharded across ranks, or on where an interrupted run resumed.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(*parts: object) -> int:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 2  # < 2**62: valid for torch.Generator and numpy


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def uniform(seed: int) -> float:
    """One U[0,1) draw from its own seed (the acceptance test's u)."""
    return float(torch.rand((), generator=generator(seed), dtype=torch.float64))
