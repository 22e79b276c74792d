"""Random pruning: an i.i.d. Bernoulli mask per element, from a fixed seed (the study used 42)."""

from __future__ import annotations

import torch

from . import register


@register(
    "random",
    description="""Random pruning zeroes each prunable weight independently with probability equal to the
    target sparsity (an i.i.d. Bernoulli mask from a fixed seed). It is the control condition: any effect of
    an informed method should exceed what random zeroing does.""",
    needs_calibration=False,
)
def prune_random(layers, request, done) -> None:
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    for layer in layers:
        weight = layer.module.weight.data
        mask = torch.rand(weight.shape, generator=generator) < request.sparsity
        weight.masked_fill_(mask.to(weight.device), 0)
        done(layer)
