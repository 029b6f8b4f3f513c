"""The generation seam: the sampler, the evaluator and the rewards that use an LLM talk to this and
never to an engine directly, so every engine returns the same records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

Chat = list[dict[str, str]]
"""A conversation as OpenAI-style messages: [{'role': 'user', 'content': ...}, ...]."""


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one turn (proposal, critique or revision)."""

    max_new_tokens: int = 128
    """Upper bound on generated tokens."""
    temperature: float = 0.7
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus mass kept; 1.0 keeps the full distribution."""


@dataclass
class Generation:
    """One generated answer."""

    text: str
    """Decoded completion, special tokens stripped."""
    prompt_tokens: int
    """Tokens of the rendered chat that were fed to the model."""
    completion_tokens: int
    """Tokens generated, up to and including EOS."""
    finished: bool = True
    """False when generation stopped at max_new_tokens."""


@runtime_checkable
class GenerationBackend(Protocol):
    """Generates answers to chats and scores given answers, batch by batch.

    ``seeds`` holds one seed per chat: a chat's sample depends on its seed alone, not on which other
    chats share its batch, so sharding prompts across ranks or resuming a run reproduces the chains.
    """

    model_id: str

    def generate(self, chats: Sequence[Chat], params: SamplingParams, seeds: Sequence[int]) -> list[Generation]:
        ...

    def logprob(self, chats: Sequence[Chat], completions: Sequence[str], temperature: float = 1.0) -> list[float]:
        """Summed log-probability of each completion as the assistant's reply to its chat (teacher forced)."""
        ...
