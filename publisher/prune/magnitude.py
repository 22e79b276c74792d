"""Magnitude pruning: zero the smallest |w| of each weight matrix (unstructured), or of each N:M group.

    >>> prune_model(model, PruneRequest("magnitude", 0.5))                     # exact-k per matrix
    >>> prune_model(model, PruneRequest("magnitude", 0.5, structure="2:4"))    # 2 smallest of every 4 inputs
"""

from __future__ import annotations

import math

import torch

from . import MatrixPruner, PruneRequest, register_per_matrix
from .masks import prune_smallest_magnitude_
from .nm import zero_nm_smallest_


@register_per_matrix(
    "magnitude",
    description="""Magnitude pruning zeroes, in every prunable weight matrix independently, the weights with
    the smallest absolute value (k = floor(n × target) per matrix; with an N:M structure, the N smallest of
    every group of M consecutive inputs in each row). It needs no calibration data: importance is the
    weight's size alone.""",
)
def magnitude_pruner(request: PruneRequest) -> MatrixPruner:
    structure = request.nm

    def prune(name: str, weight: torch.Tensor) -> int | None:
        if structure.unstructured:
            k = math.floor(weight.numel() * request.sparsity)
            # Ranks by |weight| from the weight's own bits (no abs() copy), zeroes in place (no mask built).
            return prune_smallest_magnitude_(weight, k, ties=request.tie_policy)
        zero_nm_smallest_(weight, structure.n, structure.m)
        return None

    return prune
