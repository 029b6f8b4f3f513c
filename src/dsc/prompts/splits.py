"""Deterministic, group-aware train/validation/test assignment shared by every prompt source.

Guarantees:
- the same groups, seed and fractions give the same assignment, whatever order the groups arrive in;
- all prompts of one group (a movie title, a news topic, one prompt text) land in one split;
- with at least 3 groups, every split whose fraction is positive gets at least one group.
"""

from __future__ import annotations

import math
import random
from collections.abc import Hashable, Sequence

from dsc.errors import DscError

SPLITS: tuple[str, ...] = ("train", "validation", "test")
"""The split names, in the order the shuffled groups are cut."""

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.8, 0.1, 0.1)
"""Default share of groups per split (train, validation, test)."""


def check_fractions(fractions: Sequence[float], field: str = "task.prompts.fractions") -> tuple[float, float, float]:
    """Validate ``fractions`` (any sequence, e.g. an OmegaConf ListConfig) and return it as a tuple."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise DscError(
            f"{field}={list(fractions) if _iterable(fractions) else fractions!r} is not a valid split; "
            "give three non-negative numbers (train, validation, test) summing to 1, e.g. [0.8, 0.1, 0.1]"
        )
    return values  # type: ignore[return-value]


def _iterable(value: object) -> bool:
    try:
        iter(value)  # type: ignore[call-overload]
    except TypeError:
        return False
    return not isinstance(value, str)


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """How many of ``n`` groups go to train, validation and test."""
    f = check_fractions(fractions)
    n_train = round(n * f[0])
    n_val = round(n * (f[0] + f[1])) - n_train
    counts = [n_train, n_val, n - n_train - n_val]
    if n >= 3:
        # Every split with a positive fraction gets at least one group, taken from the largest split.
        for i in range(3):
            if f[i] > 0 and counts[i] == 0:
                donor = max(range(3), key=lambda j: counts[j])
                counts[donor] -= 1
                counts[i] += 1
    return counts[0], counts[1], counts[2]


def assign_splits(groups: Sequence[Hashable], seed: int, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[str]:
    """Return the split of each item, given each item's group key.

    The unique groups are sorted (by ``repr``, so mixed key types work), shuffled with
    ``random.Random(seed)`` and cut into train, validation and test by ``fractions``.
    """
    unique = sorted(set(groups), key=repr)
    random.Random(seed).shuffle(unique)
    n_train, n_val, _ = split_counts(len(unique), fractions)
    of_group: dict[Hashable, str] = {}
    for i, group in enumerate(unique):
        of_group[group] = SPLITS[0] if i < n_train else SPLITS[1] if i < n_train + n_val else SPLITS[2]
    return [of_group[g] for g in groups]


def count_splits(prompts: Sequence[object]) -> dict[str, int]:
    """Prompts per split, e.g. ``{'train': 416, 'validation': 52, 'test': 52}``."""
    counts = {s: 0 for s in SPLITS}
    for p in prompts:
        counts[p.split] = counts.get(p.split, 0) + 1  # type: ignore[attr-defined]
    return counts
