"""Pruning methods, registered by name, and `prune_model` which runs one over the prunable scope.

Adding a method is one module that defines a function and decorates it (then import it at the bottom):

    @register("wanda", description="...", needs_calibration=True)
    def prune_wanda(model, layers, request, done): ...           # sees the whole model (forwards, hooks)

    @register_per_matrix("magnitude", description="...")
    def magnitude_pruner(request): return lambda name, weight: ...   # one matrix at a time, any order

A per-matrix method never needs the model: the pipeline can stream it from the base model's safetensors to
the run's, one tensor in memory (`streaming.py`); in a loaded model it runs through `editable_weight`.

    >>> record = prune_model(model, PruneRequest(method="magnitude", sparsity=0.5))
    >>> record.layers[0].zeros / record.layers[0].params
    0.5
    >>> calib = load_calibration(tokenizer, CalibrationSpec("c4-sample.json.gz", samples=128, seq_len=2048))
    >>> prune_model(model, PruneRequest("wanda", 0.5, structure="2:4", calibration=calib.input_ids))

Methods: `random`, `magnitude` (no calibration), `wanda`, `sparsegpt` (calibration token ids needed);
`expert-drop` (mixture-of-experts models: removes whole experts, `expert_drop.py`); structures:
`unstructured` or any N:M (`structure.py`). A method function zeroes weights in place and calls `done(layer)`
after each layer; it may return a dict of details (timings) that `prune_model` logs, and under "moe" what it
did to experts (tokens routed to each, fallbacks, experts kept), which goes into the record.

In a mixture-of-experts model the prunable matrices are the linears plus every routed expert's gate, up and
down matrix (`scope.prunable_matrices`); per-matrix methods treat each as its own matrix, Wanda and SparseGPT
give each expert the statistics of the tokens the router sends it (`moe_calibration.py`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from ..errors import SettingsError
from ..results import LayerSparsity, PruneRecord
from .calibration import CalibrationError
from .experts import moe_facts
from .moe_options import check_moe_choices
from .offload import editable_weight, read_weight
from .scope import SCOPE_DESCRIPTION, PrunableMatrix, check_prunable_scope, prunable_matrices, scope_description
from .sparsity import zeros_in
from .structure import Structure, parse_structure

log = logging.getLogger(__name__)

DEFAULT_ACTIVATION_BUDGET = 1 << 30  # bytes of working activations per calibration chunk (see sequential.py)


@dataclass(frozen=True)
class PruneRequest:
    """What to prune and how. `structure` accepts a `Structure` or its text ("unstructured", "2:4").

    `calibration`: int64 token ids (samples × seq_len) for methods that need them (`load_calibration`);
    `activation_budget_bytes`: how much working memory one chunk of calibration samples may use in a block's
    forward (the block's inputs for all samples are held besides, in the model's dtype);
    `sparsegpt_block_size` / `sparsegpt_damp`: the reference's 128 and 1 % of the mean Hessian diagonal.
    Mixture-of-experts models: `moe_calibration` "routed" (each expert's statistics from the tokens the router
    sends it; experts under the floor fall back to all tokens) or "all" (every token to every expert);
    `experts_keep` (fraction) or `experts_keep_n` (count) per layer and `expert_saliency` ("reap",
    "frequency") for `expert-drop`.
    """

    method: str
    sparsity: float
    tie_policy: str = "exact"
    seed: int = 42
    structure: Structure | str = "unstructured"
    calibration: torch.Tensor | None = field(default=None, compare=False, repr=False)
    activation_budget_bytes: int = DEFAULT_ACTIVATION_BUDGET
    sparsegpt_block_size: int = 128
    sparsegpt_damp: float = 0.01
    moe_calibration: str = "routed"
    experts_keep: float | None = None
    experts_keep_n: int | None = None
    expert_saliency: str = "reap"

    def __post_init__(self) -> None:
        if isinstance(self.structure, str):
            object.__setattr__(self, "structure", parse_structure(self.structure))

    @property
    def nm(self) -> Structure:
        """The structure, typed (always a `Structure` after construction)."""
        assert isinstance(self.structure, Structure)
        return self.structure


Done = Callable[[PrunableMatrix], None]
PruneFn = Callable[[torch.nn.Module, list[PrunableMatrix], PruneRequest, Done], "dict | None"]


# Zeroes one weight matrix in place, given its state-dict name; must not depend on the order matrices come in.
# Returns how many entries are zero afterwards when it knows exactly without counting, else None.
MatrixPruner = Callable[[str, torch.Tensor], "int | None"]


@dataclass(frozen=True)
class PruningMethod:
    name: str
    description: str  # one paragraph, shown on the model card
    needs_calibration: bool
    prune: PruneFn  # zeroes weights in place; calls `done(layer)` after each layer
    # Per-matrix methods: request → a pruner applied to every prunable matrix, in any order (else None).
    matrix_pruner: Callable[[PruneRequest], MatrixPruner] | None = None
    # Removes whole experts of a mixture-of-experts model (a smaller model, no zeros): --sparsity does not apply
    drops_experts: bool = False


METHODS: dict[str, PruningMethod] = {}


def register(name: str, *, description: str, needs_calibration: bool,
             drops_experts: bool = False) -> Callable[[PruneFn], PruneFn]:
    def decorator(fn: PruneFn) -> PruneFn:
        METHODS[name] = PruningMethod(name, " ".join(description.split()), needs_calibration, fn,
                                      drops_experts=drops_experts)
        return fn

    return decorator


def register_per_matrix(name: str, *, description: str) -> Callable:
    """Register a method that prunes each matrix on its own (no calibration, no forward pass)."""

    def decorator(make_pruner: Callable[[PruneRequest], MatrixPruner]) -> Callable[[PruneRequest], MatrixPruner]:
        def prune(model: torch.nn.Module, layers: list[PrunableMatrix], request: PruneRequest, done: Done) -> None:
            pruner = make_pruner(request)
            for layer in layers:
                with editable_weight(model, layer) as weight:
                    pruner(layer.weight_name, weight)
                done(layer)

        METHODS[name] = PruningMethod(name, " ".join(description.split()), False, prune, make_pruner)
        return make_pruner

    return decorator


def get_method(name: str) -> PruningMethod:
    if name not in METHODS:
        raise SettingsError(f"unknown pruning method {name!r}; available: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def count_layer(model: torch.nn.Module, layer: PrunableMatrix) -> LayerSparsity:
    weight = read_weight(model, layer)
    return LayerSparsity(layer.weight_name, list(weight.shape), weight.numel(), zeros_in(weight))


def check_request(model: torch.nn.Module, request: PruneRequest, layers: list[PrunableMatrix]) -> None:
    """Every user-facing error before any work: structure vs sparsity and shapes, tie policy, calibration."""
    method = get_method(request.method)
    structure = request.nm
    check_prunable_scope(model)
    check_moe_choices(request.moe_calibration, request.expert_saliency)
    if method.drops_experts:
        from .expert_drop import check_drop_request  # late: it imports this module

        check_drop_request(model, request)
    else:
        if not 0.0 < request.sparsity < 1.0:
            raise SettingsError(f"sparsity must be strictly between 0 and 1, got {request.sparsity:g}")
        structure.check_sparsity(request.sparsity)
    if not structure.unstructured:
        bad = next((x for x in layers if not structure.fits(x.in_features)), None)
        if bad is not None:
            raise SettingsError(
                f"structure {structure} needs the input size of every prunable matrix to be a multiple of "
                f"{structure.m}; {bad.name} has {bad.in_features} inputs"
            )
        if method.name == "magnitude" and request.tie_policy != "exact":
            raise SettingsError("--magnitude-ties threshold applies to unstructured magnitude pruning only; "
                                f"structure {structure} always prunes exactly {structure.n} per group")
    if method.needs_calibration:
        ids = request.calibration
        if ids is None or ids.numel() == 0:
            raise CalibrationError(
                f"method {method.name!r} needs calibration data: --calibration-samples must be at least 1"
            )
        if ids.dim() != 2 or ids.dtype not in (torch.int64, torch.int32):
            raise CalibrationError(f"calibration must be integer token ids shaped samples × seq_len, got "
                                   f"{ids.dtype} {tuple(ids.shape)}")
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if config is not None else None
        limit = getattr(text_config, "max_position_embeddings", None)
        if limit and ids.shape[1] > limit:
            raise CalibrationError(f"calibration sequences of {ids.shape[1]} tokens exceed the model's "
                                   f"max_position_embeddings ({limit}); lower --calibration-seq-len")
        vocab = getattr(text_config, "vocab_size", None)
        if vocab and int(ids.max()) >= vocab:
            raise CalibrationError(f"calibration token id {int(ids.max())} is outside the model's vocabulary "
                                   f"({vocab}); was it tokenized with another tokenizer?")


@torch.no_grad()
def prune_model(model: torch.nn.Module, request: PruneRequest, *, progress: bool = True) -> PruneRecord:
    """Prune every prunable linear of `model` in place with the requested method; time it."""
    method = get_method(request.method)
    layers = prunable_matrices(model)
    check_request(model, request, layers)
    scope, facts = scope_description(model), moe_facts(model)
    training = model.training
    model.eval()
    from ..peak_memory import PeakMemory

    try:
        with tqdm(total=len(layers), desc=f"{method.name} pruning", unit="layer", disable=not progress) as bar, \
                PeakMemory(_device_of(model)) as peak:
            start = time.perf_counter()
            details = dict(method.prune(model, layers, request, lambda layer: bar.update(1)) or {})
            elapsed = time.perf_counter() - start
    finally:
        model.train(training)
    moe = {**facts, **details.pop("moe", {})} if facts else None
    if details:
        log.info("%s details: %s", method.name, details)
    if method.drops_experts:  # the experts left: counted as they are now
        layers = prunable_matrices(model)
    record = prune_record(request, elapsed, [count_layer(model, x) for x in layers], scope=scope, moe=moe)
    record.peak_gpu_bytes = peak.bytes
    return record


def _device_of(model: torch.nn.Module) -> torch.device:
    return next((p.device for p in model.parameters() if p.device.type != "meta"), torch.device("cpu"))


def prune_record(request: PruneRequest, elapsed_s: float, layers: list[LayerSparsity], *,
                 scope: str = SCOPE_DESCRIPTION, moe: dict | None = None) -> PruneRecord:
    """What was done, for results.json: method, structure, target, tie policy, seed, scope, time, per layer;
    for a mixture-of-experts model what was done to its experts (`moe`). Expert dropping's target is the share
    of each layer's routed experts it removed."""
    ties = request.tie_policy if request.method == "magnitude" and request.nm.unstructured else "n/a"
    target = request.sparsity
    if moe and moe.get("expert_drop"):
        target = moe["expert_drop"]["dropped_share"]
    return PruneRecord(
        method=request.method, structure=str(request.nm), target_sparsity=target,
        tie_policy=ties, seed=request.seed, scope=scope, prune_time_s=round(elapsed_s, 4),
        layers=layers, moe=moe,
    )


# Importing the method modules registers them.
from . import expert_drop, magnitude, random, sparsegpt, wanda  # noqa: E402,F401
