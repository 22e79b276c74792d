"""publish-pruned: prune an LLM, measure what the pruning did, publish it with a research-only card."""

__version__ = "0.1.0"
