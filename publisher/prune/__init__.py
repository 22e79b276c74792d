"""Pruning methods, registered by name, and `prune_model` which runs one over the prunable scope.

Adding a method is one module that defines a function and decorates it:

    @register("magnitude", description="...", needs_calibration=False)
    def prune_magnitude(layers, request, progress): ...

    >>> record = prune_model(model, PruneRequest(method="magnitude", sparsity=0.5))
    >>> record.layers[0].zeros / record.layers[0].params
    0.5
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ..errors import SettingsError
from ..results import LayerSparsity, PruneRecord
from .scope import SCOPE_DESCRIPTION, PrunableLinear, prunable_linears


@dataclass(frozen=True)
class PruneRequest:
    method: str
    sparsity: float
    tie_policy: str = "exact"
    seed: int = 42
    structure: str = "unstructured"


PruneFn = Callable[[list[PrunableLinear], PruneRequest, Callable[[PrunableLinear], None]], None]


@dataclass(frozen=True)
class PruningMethod:
    name: str
    description: str  # one paragraph, shown on the model card
    needs_calibration: bool
    prune: PruneFn  # zeroes weights in place; calls `done(layer)` after each layer


METHODS: dict[str, PruningMethod] = {}


def register(name: str, *, description: str, needs_calibration: bool) -> Callable[[PruneFn], PruneFn]:
    def decorator(fn: PruneFn) -> PruneFn:
        METHODS[name] = PruningMethod(name, " ".join(description.split()), needs_calibration, fn)
        return fn

    return decorator


def get_method(name: str) -> PruningMethod:
    if name not in METHODS:
        raise SettingsError(f"unknown pruning method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def count_layer(layer: PrunableLinear) -> LayerSparsity:
    weight = layer.module.weight
    return LayerSparsity(layer.weight_name, list(weight.shape), weight.numel(), int((weight == 0).sum()))


@torch.no_grad()
def prune_model(model: torch.nn.Module, request: PruneRequest, *, progress: bool = True) -> PruneRecord:
    """Prune every prunable linear of `model` in place with the requested method; time it."""
    method = get_method(request.method)
    layers = prunable_linears(model)
    with tqdm(total=len(layers), desc=f"{method.name} pruning", unit="layer", disable=not progress) as bar:
        start = time.perf_counter()
        method.prune(layers, request, lambda layer: bar.update(1))
        elapsed = time.perf_counter() - start
    return PruneRecord(
        method=method.name, structure=request.structure, target_sparsity=request.sparsity,
        tie_policy=request.tie_policy if method.name == "magnitude" else "n/a", seed=request.seed,
        scope=SCOPE_DESCRIPTION, prune_time_s=round(elapsed, 4), layers=[count_layer(x) for x in layers],
    )


# Importing the method modules registers them.
from . import magnitude, random  # noqa: E402,F401
