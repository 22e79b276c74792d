"""Block-by-block calibration forward: what Wanda and SparseGPT see of the calibration data.

    >>> runner = BlockRunner(model, calibration_ids, activation_budget_bytes=1 << 30)
    >>> for index in range(runner.num_blocks):
    ...     with InputCapture(block_linears, make_stats) as capture:
    ...         runner.run(index)                    # dense block: every linear's input reaches its stats
    ...     prune(block_linears, capture.stats)
    ...     runner.run(index, keep_outputs=True)     # pruned block: its outputs become the next block's inputs

`prune_sequentially` is that loop for any method that needs (stats per layer → pruned weights). In a
mixture-of-experts block the experts' matrices get their statistics from `moe_calibration.RoutedCapture`
(the tokens the router sends each expert), the linears (attention, shared experts) from `InputCapture`.

How block inputs are found: every decoder block's `forward` is swapped for a stub that records its
arguments (the hidden states entering block 0; for every block, the other args/kwargs the model passes:
attention mask — per layer type for Gemma-2's sliding layers —, `position_embeddings` from the rotary
module, `position_ids`, cache settings) and returns the hidden states untouched; the last stub raises to stop
the forward before the final norm and LM head. The real forwards are then called block by block with those
recorded arguments. No activation of the whole model is ever held: only the current block's inputs for all
calibration samples (samples × seq_len × hidden, the model's dtype; outputs overwrite them chunk by chunk)
plus one chunk's working activations, whose size `samples_per_chunk` keeps under `activation_budget_bytes`.

Devices: each chunk and the recorded arguments are moved to the block's execution device (CPU, CUDA, MPS).
With `--device-map`, accelerate spreads blocks over GPUs, CPU and disk: a block's execution device is its
hook's, offloaded weights are brought in by the hook for each forward, and pruning reads and writes them
through `offload.editable_weight`, so calibration follows the layers where they live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ArchitectureError
from .experts import ExpertMatrix, experts_layout, routers
from .moe_calibration import RoutedCapture, moe_report
from .offload import editable_weight, execution_device
from .scope import PrunableLinear, PrunableMatrix, find_decoder_blocks


class _Stop(Exception):
    """Raised by the last block's stub: the rest of the model is not needed."""


class Stats(Protocol):
    def add(self, x: torch.Tensor) -> None:
        """Accumulate a batch of inputs, shaped tokens × in_features."""


@dataclass
class Timings:
    """Where the time of one calibrated pruning went (seconds)."""

    capture_s: float = 0.0  # embedding pass that records the block inputs
    forward_s: float = 0.0  # block forwards (with the stats hooks of the first pass)
    prune_s: float = 0.0  # turning stats into masks / updated weights
    samples_per_chunk: int = 0
    chunks: int = 0
    extra: dict[str, float] = field(default_factory=dict)
    moe: dict[str, Any] | None = None  # routed calibration of a mixture-of-experts model (`moe_report`)

    def as_dict(self) -> dict[str, float]:
        return {"capture_s": round(self.capture_s, 3), "forward_s": round(self.forward_s, 3),
                "prune_s": round(self.prune_s, 3), "samples_per_chunk": self.samples_per_chunk,
                "chunks": self.chunks, **self.extra}


def samples_per_chunk(blocks: nn.ModuleList, seq_len: int, heads: int, budget_bytes: int) -> int:
    """Calibration samples per block forward so that the chunk's working activations fit `budget_bytes`.

    Estimate per token: 4 bytes × (inputs + outputs of every linear of the block, and of the top-k experts a
    token is routed to), in fp32 because the stats hooks work in fp32, plus an fp32 attention row and its
    softmax (2 × 4 × heads × seq_len bytes).
    """
    per_token = max(
        4 * (sum(m.in_features + m.out_features for m in block.modules() if isinstance(m, nn.Linear))
             + _routed_width(block))
        for block in blocks
    )
    per_sample = seq_len * (per_token + 8 * heads * seq_len)
    return max(1, int(budget_bytes // per_sample))


def _routed_width(block: nn.Module) -> int:
    """Inputs + outputs of the experts' matrices one token passes through (top-k of them); 0 in a dense block."""
    top_k = {id(experts): getattr(router, "top_k", None) for router, experts in routers(block)}
    width = 0
    for module in block.modules():
        layout = experts_layout(module)
        if layout is not None:
            per_expert = sum(getattr(module, name).shape[1] + getattr(module, name).shape[2] for name, _ in layout)
            width += per_expert * (top_k.get(id(module)) or module.down_proj.shape[0])
    return width


def _move(value: Any, device: torch.device, memo: dict) -> Any:
    if isinstance(value, torch.Tensor):
        key = (id(value), device)
        if key not in memo:
            memo[key] = (value, value.to(device))  # keep `value` alive so its id is not reused
        return memo[key][1]
    if isinstance(value, tuple | list):
        return type(value)(_move(v, device, memo) for v in value)
    if isinstance(value, dict):
        return {k: _move(v, device, memo) for k, v in value.items()}
    return value


class BlockRunner:
    """Holds the current block's calibration inputs (chunked over samples) and runs blocks one at a time."""

    def __init__(self, model: nn.Module, input_ids: torch.Tensor, *, activation_budget_bytes: int = 1 << 30):
        _, self.blocks = find_decoder_blocks(model)
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if config is not None else None
        heads = getattr(text_config, "num_attention_heads", 1) or 1
        self.chunk = samples_per_chunk(self.blocks, input_ids.shape[1], heads, activation_budget_bytes)
        self.hidden: list[torch.Tensor] = []  # inputs of the current block, one tensor per chunk of samples
        self._calls: dict[int, list[tuple[tuple, dict]]] = {}  # batch size → per block: (args after hidden, kwargs)
        self._memo: dict = {}
        self.timings = Timings(samples_per_chunk=self.chunk)
        start = time.perf_counter()
        self._capture(model, input_ids)
        self.timings.capture_s = time.perf_counter() - start
        self.timings.chunks = len(self.hidden)

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def _capture(self, model: nn.Module, input_ids: torch.Tensor) -> None:
        embed_device = execution_device(model.get_input_embeddings())
        saved = [block.__dict__.get("forward") for block in self.blocks]
        last = len(self.blocks) - 1

        def stub(index: int) -> Callable:
            def forward(*args, **kwargs):
                if args:
                    hidden, rest = args[0], args[1:]
                else:
                    hidden, rest = kwargs.pop("hidden_states"), ()
                calls = self._calls.setdefault(hidden.shape[0], [])
                if len(calls) == index:
                    calls.append((rest, kwargs))
                if index == 0:
                    self.hidden.append(hidden.detach())
                if index == last:
                    raise _Stop
                return hidden

            return forward

        try:
            for index, block in enumerate(self.blocks):
                block.forward = stub(index)
            for batch in input_ids.split(self.chunk):
                try:
                    model(input_ids=batch.to(embed_device), use_cache=False)
                except _Stop:
                    continue
                raise ArchitectureError(f"{type(model).__name__}'s forward did not call its last decoder block")
        finally:
            for block, forward in zip(self.blocks, saved, strict=True):
                if forward is None:
                    del block.forward
                else:  # e.g. accelerate's hook wrapper
                    block.forward = forward
        if len(self.hidden) != len(input_ids.split(self.chunk)):
            raise ArchitectureError(f"{type(model).__name__}'s forward did not call decoder block 0 once per batch")

    def run(self, index: int, *, keep_outputs: bool = False) -> None:
        """Run block `index` on every chunk; with `keep_outputs`, its outputs replace the stored inputs."""
        block = self.blocks[index]
        device = execution_device(block)
        start = time.perf_counter()
        for c, hidden in enumerate(self.hidden):
            rest, kwargs = self._calls[hidden.shape[0]][index]
            out = block(hidden.to(device), *_move(rest, device, self._memo), **_move(kwargs, device, self._memo))
            if isinstance(out, tuple | list):
                out = out[0]
            if keep_outputs:
                self.hidden[c] = out
            del out
        self.timings.forward_s += time.perf_counter() - start
        self._memo.clear()


class InputCapture:
    """Forward pre-hooks feeding every given linear's input (tokens × in_features) to its stats object.

    Linears that receive the very same input tensor in a forward (q/k/v; gate/up) share one stats object,
    so the work is done once (`shared_with[name]` = the name of the layer that owns it). A linear that never
    receives input leaves no stats: `stats_for` then raises.
    """

    def __init__(self, layers: list[PrunableLinear], make_stats: Callable[[PrunableLinear], Stats],
                 scope: nn.Module | None = None):
        self.layers = layers
        self.make_stats = make_stats
        self.stats: dict[str, Stats] = {}
        self.shared_with: dict[str, str] = {}
        self._seen: dict[int, tuple[torch.Tensor, str]] = {}  # id(input) → (input, owner name), one forward
        self._handles: list = []
        self._scope = scope

    def __enter__(self) -> InputCapture:
        for layer in self.layers:
            self._handles.append(layer.module.register_forward_pre_hook(self._hook(layer), with_kwargs=True))
        if self._scope is not None:  # forget the inputs of the previous forward
            self._handles.append(self._scope.register_forward_pre_hook(lambda *_: self._seen.clear()))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._seen.clear()

    def _hook(self, layer: PrunableLinear) -> Callable:
        name = layer.name

        def hook(module, args, kwargs):
            x = args[0] if args else kwargs["input"]
            seen = self._seen.get(id(x))
            if seen is not None and seen[0] is x:
                owner = seen[1]
                if name not in self.stats:
                    self.stats[name] = self.stats[owner]
                    self.shared_with[name] = owner
                if self.stats[name] is self.stats[owner]:
                    return None
            elif name in self.shared_with:
                raise RuntimeError(f"{name} shared its input with {self.shared_with[name]} in one forward "
                                   "but not in another")
            if name not in self.stats:
                self.stats[name] = self.make_stats(layer)
            self.stats[name].add(x.reshape(-1, x.shape[-1]))
            self._seen[id(x)] = (x, name)
            return None

        return hook

    def stats_for(self, layer: PrunableLinear) -> Stats:
        if layer.name not in self.stats:
            raise ArchitectureError(f"{layer.name} received no input during the calibration forward of its block; "
                                    "its weights cannot be scored")
        return self.stats[layer.name]


def prune_sequentially(
    model: nn.Module,
    layers: list[PrunableMatrix],
    input_ids: torch.Tensor,
    *,
    stats_type: Callable[[int, torch.device], Stats],
    prune_layer: Callable[[PrunableMatrix, Stats, torch.Tensor], None],
    done: Callable[[PrunableMatrix], None],
    activation_budget_bytes: int = 1 << 30,
    moe_calibration: str = "routed",
) -> Timings:
    """For each block: dense forward collecting stats of its linears, prune them, pruned forward → next block.

    Within a block every linear is scored on the block's dense activations (as both references do); the
    block's pruned outputs feed the next block. `stats_type(in_features, device)` makes a layer's stats
    on the device its block runs on. Experts' matrices get routed statistics (`moe_calibration`: "routed" or
    "all"; experts under the floor get a second forward with every token). Returns where the time went, and
    for an MoE model the routing report in `timings.moe`.
    """

    def make_stats(layer: PrunableMatrix) -> Stats:
        return stats_type(layer.in_features, execution_device(layer.module))

    runner = BlockRunner(model, input_ids, activation_budget_bytes=activation_budget_bytes)
    by_block: dict[int, list[PrunableMatrix]] = {}
    for layer in layers:
        by_block.setdefault(layer.block, []).append(layer)
    routing: list[dict[str, Any]] = []
    for index in range(runner.num_blocks):
        block_layers = by_block.get(index, [])
        if block_layers:
            experts = [x for x in block_layers if isinstance(x, ExpertMatrix)]
            linears = [x for x in block_layers if not isinstance(x, ExpertMatrix)]
            with InputCapture(linears, make_stats, scope=runner.blocks[index]) as capture, \
                    RoutedCapture(model, experts, make_stats, mode=moe_calibration) as routed:
                runner.run(index)
            fallback = routed.under_floor()
            if fallback:  # their routed stats are dropped; a second dense forward gives them every token
                with routed.all_tokens_for(fallback):
                    runner.run(index)
            routing += routed.report()
            start = time.perf_counter()
            for layer in block_layers:
                stats = routed.stats_for(layer) if isinstance(layer, ExpertMatrix) else capture.stats_for(layer)
                with editable_weight(model, layer) as weight:  # offloaded weights: loaded, stored back
                    prune_layer(layer, stats, weight)
                done(layer)
            runner.timings.prune_s += time.perf_counter() - start
            del capture, routed
        if index + 1 < runner.num_blocks:
            runner.run(index, keep_outputs=True)
    if routing:
        runner.timings.moe = moe_report(moe_calibration, routing)
    return runner.timings
