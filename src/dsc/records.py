"""The sample record: one typed row per chain step, the contract between sampling, distillation,
evaluation, W&B tables and exports.

Step 0 holds the proposal x₀ (no critique, no revision). Step t ≥ 1 holds the chain's state before the
step (``response`` = xₜ₋₁), the critique z, the revision x', both rewards, the acceptance draw and the
resulting state. ``accepted == (u < alpha)`` holds for every step record, so any acceptance decision
can be re-checked from disk.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Prompt:
    """One prompt c of a task."""

    id: str
    """Stable identifier, unique within a prompt set (e.g. 'advbench-0017')."""
    text: str
    """The user message sent to the LLM."""
    split: str = "train"
    """'train', 'validation' or 'test'."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance (source file, topic, movie title …); never shown to the model."""


@dataclass
class ChainStep:
    """One step of one chain."""

    prompt_id: str
    """Prompt this chain answers."""
    chain_id: int
    """Index of the chain within its prompt, 0 … N-1."""
    step: int
    """0 = proposal x₀; t ≥ 1 = the t-th critique→revision step."""
    prompt: str
    """The prompt text c."""
    response: str
    """State before this step (xₜ₋₁); for step 0 the proposal x₀ itself."""
    reward_response: float
    """r(c, response), the raw reward (β is applied only by the acceptance rule)."""
    state: str
    """State after this step: the revision if accepted, else ``response``."""
    reward_state: float
    """r(c, state)."""
    critique: str | None = None
    """z ~ p(z | c, xₜ₋₁); None at step 0."""
    revision: str | None = None
    """x' ~ p(x | c, xₜ₋₁, z); None at step 0."""
    reward_revision: float | None = None
    """r(c, x'); None at step 0."""
    alpha: float | None = None
    """Acceptance probability of the rule in force; None at step 0."""
    u: float | None = None
    """The uniform draw compared with alpha; None at step 0."""
    accepted: bool | None = None
    """u < alpha; None at step 0."""
    acceptance: str = ""
    """Name of the acceptance rule."""
    seed: int = 0
    """Seed of the first turn of this step; later turns derive from it (see dsc.seeding)."""
    model_id: str = ""
    """Identity of the proposal model (path or hub id plus weights hash)."""
    prompt_tokens: int = 0
    """Tokens fed to the model over this step's generations (prompt side)."""
    completion_tokens: int = 0
    """Tokens generated in this step (critique + revision, or the proposal)."""
    seconds: float = 0.0
    """Wall time of this step's generations and scoring, shared equally by the batch's chains."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Rule-specific diagnostics (e.g. the log-prob terms of mh_exact)."""

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.prompt_id, self.chain_id, self.step)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "ChainStep":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in names})
