"""Magnitude pruning: zero the smallest |w| of each weight matrix."""

from __future__ import annotations

import math

from . import register
from .masks import zero_smallest_magnitude_


@register(
    "magnitude",
    description="""Magnitude pruning zeroes, in every prunable weight matrix independently, the weights with
    the smallest absolute value (k = floor(n × target) per matrix). It needs no calibration data: importance
    is the weight's size alone.""",
    needs_calibration=False,
)
def prune_magnitude(layers, request, done) -> None:
    for layer in layers:
        weight = layer.module.weight.data
        k = math.floor(weight.numel() * request.sparsity)
        # Ranks by |weight| from the weight's own bits (no abs() copy) and zeroes in place (no mask built).
        zero_smallest_magnitude_(weight, k, ties=request.tie_policy)
        done(layer)
