"""Evaluation: quality against the unquantized model (perplexity, KL divergence, top-1 agreement),
lm-eval tasks and speed, each in the engine that serves the artifact."""
