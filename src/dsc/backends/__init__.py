"""Generation backends: one interface, several engines (transformers, OpenAI-compatible servers, vLLM)."""

from dsc.backends.base import Chat, Generation, GenerationBackend, SamplingParams

__all__ = ["Chat", "Generation", "GenerationBackend", "SamplingParams"]
