"""dsc: distilled Self-Critique (arXiv 2312.01957).

Alignment as Bayesian inference: sample p(x|c,r) ∝ p(x|c)·exp(r(c,x)/β) with critique→revision MCMC
chains of the LLM itself, then distil the samples into the LLM so one plain generation does what the
chain did.
"""

__version__ = "0.1.0"
