"""Magnitude pruning: zero the smallest |w| of each weight matrix (unstructured), or of each N:M group.

    >>> prune_model(model, PruneRequest("magnitude", 0.5))                     # exact-k per matrix
    >>> prune_model(model, PruneRequest("magnitude", 0.5, structure="2:4"))    # 2 smallest of every 4 inputs
"""

from __future__ import annotations

import math

from . import register
from .masks import zero_smallest_magnitude_
from .nm import zero_nm_smallest_
from .offload import editable_weight


@register(
    "magnitude",
    description="""Magnitude pruning zeroes, in every prunable weight matrix independently, the weights with
    the smallest absolute value (k = floor(n × target) per matrix; with an N:M structure, the N smallest of
    every group of M consecutive inputs in each row). It needs no calibration data: importance is the
    weight's size alone.""",
    needs_calibration=False,
)
def prune_magnitude(model, layers, request, done) -> None:
    structure = request.nm
    for layer in layers:
        with editable_weight(model, layer) as weight:
            if structure.unstructured:
                k = math.floor(weight.numel() * request.sparsity)
                # Ranks by |weight| from the weight's own bits (no abs() copy), zeroes in place (no mask built).
                zero_smallest_magnitude_(weight, k, ties=request.tie_policy)
            else:
                zero_nm_smallest_(weight, structure.n, structure.m)
        done(layer)
