"""Statistics for the evaluation: paired bootstrap CIs and text-degeneration measures."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def paired_bootstrap(a: Sequence[float], b: Sequence[float], samples: int = 2000, seed: int = 0,
                     level: float = 0.95) -> dict:
    """Mean of a − b over prompts with a percentile CI from resampling prompts (pairs stay together)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if diff.size == 0:
        return {"mean": float("nan"), "ci_low": float("nan"), "ci_high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(samples, diff.size))].mean(axis=1)
    tail = (1 - level) / 2
    return {"mean": float(diff.mean()), "ci_low": float(np.quantile(means, tail)),
            "ci_high": float(np.quantile(means, 1 - tail)), "n": int(diff.size)}


def mean_ci(values: Sequence[float], samples: int = 2000, seed: int = 0) -> dict:
    return paired_bootstrap(values, np.zeros(len(values)), samples, seed)


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Unique n-grams / all n-grams over the arm's responses (low = repetitive, generic text)."""
    grams = [tuple(words[i:i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of a response's n-grams that repeat an earlier one (loops score high)."""
    words = text.split()
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0
