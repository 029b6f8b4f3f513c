"""Distillation: the chain's samples into the LLM (LoRA), by one of several divergences."""
