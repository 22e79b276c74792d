"""Random pruning from a fixed seed (the study used 42): i.i.d. Bernoulli per element, or N random per N:M group.

    >>> prune_model(model, PruneRequest("random", 0.5, seed=42))                   # ~50 %, not exact
    >>> prune_model(model, PruneRequest("random", 0.5, seed=42, structure="2:4"))  # exactly 2 of every 4

Each matrix draws from its own CPU generator, seeded from (seed, the weight's name): a mask depends on the
seed and the matrix only — not on the device, nor on the order matrices are pruned in (streamed or loaded).
"""

from __future__ import annotations

import hashlib

import torch

from . import MatrixPruner, PruneRequest, register_per_matrix
from .nm import nm_mask, rows_per_chunk


def matrix_generator(seed: int, name: str) -> torch.Generator:
    """A CPU generator for one matrix: 64 bits of sha256("<seed>:<weight name>")."""
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return torch.Generator(device="cpu").manual_seed(int.from_bytes(digest[:8], "little"))


@register_per_matrix(
    "random",
    description="""Random pruning zeroes each prunable weight independently with probability equal to the
    target sparsity (an i.i.d. Bernoulli mask from a fixed seed; with an N:M structure, N inputs chosen
    uniformly at random in every group of M). It is the control condition: any effect of an informed method
    should exceed what random zeroing does.""",
)
def random_pruner(request: PruneRequest) -> MatrixPruner:
    structure = request.nm

    def prune(name: str, weight: torch.Tensor) -> None:  # no zero count: the caller counts
        generator = matrix_generator(request.seed, name)
        if structure.unstructured:
            mask = torch.rand(weight.shape, generator=generator) < request.sparsity
            weight.masked_fill_(mask.to(weight.device), 0)
            return
        step = rows_per_chunk(weight.shape[1])
        for start in range(0, weight.shape[0], step):
            part = weight[start : start + step]
            noise = torch.rand(part.shape, generator=generator)
            part.masked_fill_(nm_mask(noise, structure.n, structure.m).to(part.device), 0)

    return prune
