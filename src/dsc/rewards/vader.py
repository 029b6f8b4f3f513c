"""Positivity by the VADER lexicon: the sentiment task's cheap, transparent reward.

The LLM is asked for negative movie reviews and rewarded for positivity, so a high score means the
critique→revision chain moved the text away from what the prompt asked. VADER is fast (≈0.1 ms a
text) and needs no model, but it correlates only r≈0.43 with human ratings and is easy to game with
positive words; use ``sentiment_minilm`` (or both, via ``weighted_sum``) when that matters.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch

from dsc.rewards.checks import check_inputs, check_scores


@functools.cache
def _analyzer():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class VaderSentiment:
    """VADER compound score in [-1, 1]; success = compound above a small positive threshold."""

    def __init__(self, success_threshold: float = 0.05, name: str = "sentiment_vader"):
        self.success_threshold = float(success_threshold)
        self.name = name

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        check_inputs(self.name, prompts, responses)
        analyzer = _analyzer()
        values = [analyzer.polarity_scores(text)["compound"] for text in responses]
        return check_scores(self.name, values, len(responses))

    def success(self, rewards: torch.Tensor) -> torch.Tensor:
        # VADER's authors read |compound| < 0.05 as neutral, so only clearly positive text counts.
        return rewards > self.success_threshold
