"""Evaluation: base model vs distilled model vs the chain, on held-out prompts."""
