"""Routed calibration: in a mixture-of-experts block, each expert's input statistics come from the calibration
tokens its router sends it (Wanda's ‖X_j‖, SparseGPT's Hessian), block by block as for dense models.

A forward pre-hook on each experts module sees what the router decided — the block's tokens, the experts each
is routed to and the routing weights — whatever kernel then runs the experts. For each expert e:

- gate and up (the same input, one shared statistics object): the tokens routed to e, each scaled by its
  routing weight g;
- down: those tokens' intermediate activations act(gate·x)·(up·x), recomputed from e's weights (dense: the
  block is pruned after its capture pass), scaled by g.

Scaling by g makes these the statistics of what the expert adds to the block's output, g·E(x): a token sent
with weight 0.1 counts 1/100 as much in Σxxᵀ (and in ‖X_j‖²) as one sent with weight 1. Tokens seen are
counted unweighted, per expert, and reported.

Floor: an expert the router sends fewer than `FLOOR_SHARE` (10 %) of the tokens uniform routing would give it
(tokens × top-k ÷ experts; at least 1 token) gets all of the block's tokens instead, unweighted, in a second
forward of the block — statistics from a handful of tokens would make its mask noise, and an expert no token
reaches would have none. `mode="all"` feeds every token to every expert (unweighted), as llm-compressor's
calibrate-all-experts option does.

    >>> with RoutedCapture(model, expert_matrices, make_stats, mode="routed") as routed:
    ...     runner.run(index)                      # the block's dense forward
    >>> with routed.all_tokens_for(routed.under_floor()):
    ...     runner.run(index)                      # only if some expert fell under the floor
    >>> routed.stats_for(matrix); routed.report()
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from .experts import ExpertMatrix, experts_layout, num_experts
from .offload import read_param

FLOOR_SHARE = 0.1  # of the tokens an expert would see under uniform routing: below it, the expert sees all tokens
MODES = ("routed", "all")


def token_floor(tokens: int, top_k: int, experts: int) -> int:
    """Routed tokens an expert needs to keep its own statistics: 10 % of its uniform share, at least 1."""
    return max(1, math.ceil(FLOOR_SHARE * tokens * top_k / max(1, experts)))


class RoutedCapture:
    """Pre-hooks on the experts modules of `matrices` feeding each expert's stats (see the module doc)."""

    def __init__(self, model: nn.Module, matrices: list[ExpertMatrix], make_stats: Callable[[ExpertMatrix], Any],
                 *, mode: str = "routed"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.model, self.mode, self.make_stats = model, mode, make_stats
        self.modules: dict[str, tuple[nn.Module, int, dict[int, list[ExpertMatrix]]]] = {}
        for matrix in matrices:
            module, block, experts = self.modules.setdefault(matrix.experts_name, (matrix.module, matrix.block, {}))
            experts.setdefault(matrix.expert, []).append(matrix)
        self.stats: dict[tuple[str, int, str], Any] = {}
        self.routed = {name: torch.zeros(num_experts(m), dtype=torch.int64) for name, (m, _, _) in self.modules.items()}
        self.tokens = dict.fromkeys(self.modules, 0)
        self.top_k = dict.fromkeys(self.modules, 0)
        self.fell_back: dict[str, list[int]] = {name: [] for name in self.modules}
        self._all_for: set[tuple[str, int]] | None = None  # set while the fallback pass runs
        self._handles: list = []

    def __enter__(self) -> RoutedCapture:
        for name, (module, _, _) in self.modules.items():
            self._handles.append(module.register_forward_pre_hook(self._hook(name), with_kwargs=True))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def under_floor(self) -> set[tuple[str, int]]:
        """(experts module, expert) pairs routed fewer tokens than the floor ("routed" mode; else none)."""
        if self.mode != "routed":
            return set()
        return {(name, e) for name, counts in self.routed.items()
                for e in range(len(counts)) if int(counts[e]) < self.floor(name)}

    def floor(self, name: str) -> int:
        return token_floor(self.tokens[name], self.top_k[name], len(self.routed[name]))

    @contextlib.contextmanager
    def all_tokens_for(self, experts: set[tuple[str, int]]) -> Iterator[None]:
        """During the block forward run in this context, `experts` get every token (their routed stats dropped)."""
        for name, e in sorted(experts):
            self.fell_back[name].append(e)
            for key in [k for k in self.stats if k[:2] == (name, e)]:
                del self.stats[key]
        self._all_for = set(experts)
        try:
            with self:
                yield
        finally:
            self._all_for = None

    def stats_for(self, matrix: ExpertMatrix) -> Any:
        """Gate and up share the statistics of the expert's inputs; down has those of its intermediate values."""
        return self.stats[(matrix.experts_name, matrix.expert, "down" if matrix.part == "down" else "in")]

    def report(self) -> list[dict[str, Any]]:
        """Per MoE layer: block index, tokens entering it, tokens routed to each expert, floor, fallbacks."""
        return [{"block": block, "tokens": self.tokens[name], "routed_tokens": self.routed[name].tolist(),
                 "floor": self.floor(name) if self.mode == "routed" else None, "fell_back": self.fell_back[name]}
                for name, (_, block, _) in self.modules.items()]

    def _hook(self, name: str) -> Callable:
        module, _, wanted = self.modules[name]

        def hook(_module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            index = args[1] if len(args) > 1 else kwargs["top_k_index"]
            weights = args[2] if len(args) > 2 else kwargs["top_k_weights"]
            hidden = hidden.reshape(-1, hidden.shape[-1])
            flat = index.reshape(-1)
            experts = len(self.routed[name])
            counts = torch.bincount(flat, minlength=experts)[:experts].cpu()
            if self._all_for is None:  # the main pass counts; the fallback pass only refills
                self.tokens[name] += hidden.shape[0]
                self.top_k[name] = index.shape[-1]
                self.routed[name] += counts
            order = torch.argsort(flat, stable=True)  # token slots grouped by expert
            starts = [0, *counts.cumsum(0).tolist()]
            for e in sorted(wanted):
                everything = self.mode == "all" if self._all_for is None else (name, e) in self._all_for
                if self._all_for is not None and not everything:
                    continue
                if everything:
                    x, g = hidden, None
                else:
                    picked = order[starts[e] : starts[e + 1]]
                    tokens, slots = picked // index.shape[-1], picked % index.shape[-1]
                    x, g = hidden[tokens], weights.reshape(-1)[tokens * index.shape[-1] + slots]
                self._add(name, module, wanted[e], e, x, g)
            return None

        return hook

    def _add(self, name: str, module: nn.Module, matrices: list[ExpertMatrix], e: int, x: torch.Tensor,
             g: torch.Tensor | None) -> None:
        """Feed expert e's input (x, scaled by g) and its intermediate values to its two stats objects."""
        first = next(m for m in matrices if m.part != "down")
        down = next(m for m in matrices if m.part == "down")
        scale = None if g is None else g.to(torch.float32).view(-1, 1)
        for key, matrix in (((name, e, "in"), first), ((name, e, "down"), down)):
            if key not in self.stats:
                self.stats[key] = self.make_stats(matrix)
        x32 = x.to(torch.float32)
        self.stats[(name, e, "in")].add(x32 if scale is None else x32 * scale)
        if x.shape[0] == 0:
            self.stats[(name, e, "down")].add(x32.new_zeros(0, down.in_features))
            return
        self.stats[(name, e, "down")].add(_intermediate(self.model, name, module, e, x, scale))


def _intermediate(model: nn.Module, name: str, module: nn.Module, e: int, x: torch.Tensor,
                  scale: torch.Tensor | None) -> torch.Tensor:
    """act(gate·x)·(up·x) of expert e (or act(up·x) without a gate), fp32, scaled by the routing weights."""
    (param, parts), _ = experts_layout(module)
    weight = read_param(model, name, param)[e].to(device=x.device, dtype=torch.float32)
    out = nn.functional.linear(x.to(torch.float32), weight)
    if parts == ("gate", "up"):
        gate, up = out.chunk(2, dim=-1)
        h = module.act_fn(gate) * up
    else:
        h = module.act_fn(out)
    return h if scale is None else h * scale


def moe_report(mode: str, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """What the card and results.json say about routed calibration: mode, floor rule, per layer, totals."""
    experts = sum(len(x["routed_tokens"]) for x in layers)
    return {"calibration": mode, "floor_share": FLOOR_SHARE if mode == "routed" else None,
            "experts": experts, "fell_back": sum(len(x["fell_back"]) for x in layers), "layers": layers}
