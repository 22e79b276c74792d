"""Random pruning from a fixed seed (the study used 42): i.i.d. Bernoulli per element, or N random per N:M group.

    >>> prune_model(model, PruneRequest("random", 0.5, seed=42))                   # ~50 %, not exact
    >>> prune_model(model, PruneRequest("random", 0.5, seed=42, structure="2:4"))  # exactly 2 of every 4
"""

from __future__ import annotations

import torch

from . import register
from .nm import nm_mask, rows_per_chunk
from .offload import editable_weight


@register(
    "random",
    description="""Random pruning zeroes each prunable weight independently with probability equal to the
    target sparsity (an i.i.d. Bernoulli mask from a fixed seed; with an N:M structure, N inputs chosen
    uniformly at random in every group of M). It is the control condition: any effect of an informed method
    should exceed what random zeroing does.""",
    needs_calibration=False,
)
def prune_random(model, layers, request, done) -> None:
    generator = torch.Generator(device="cpu").manual_seed(request.seed)
    structure = request.nm
    for layer in layers:
        with editable_weight(model, layer) as weight:
            if structure.unstructured:
                mask = torch.rand(weight.shape, generator=generator) < request.sparsity
                weight.masked_fill_(mask.to(weight.device), 0)
            else:
                step = rows_per_chunk(weight.shape[1])
                for start in range(0, weight.shape[0], step):
                    part = weight[start : start + step]
                    noise = torch.rand(part.shape, generator=generator)
                    part.masked_fill_(nm_mask(noise, structure.n, structure.m).to(part.device), 0)
        done(layer)
