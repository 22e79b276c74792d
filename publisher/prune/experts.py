"""Mixture-of-experts blocks as transformers 5 holds them, and each expert's matrices as the files hold them.

transformers 5 keeps a block's routed experts in one module as two 3-D parameters, `gate_up_proj` [E, 2I, H]
(the gate's I rows, then the up projection's: its forward splits them with `chunk(2)`) and `down_proj`
[E, H, I]; at save it writes them back as the base's per-expert tensors (`experts.N.gate_proj/up_proj/
down_proj`, Mixtral's `block_sparse_moe.experts.N.w1/w3/w2`). Pruning works on those per-expert matrices: an
`ExpertMatrix` is one expert's gate, up or down matrix, a 2-D view into the 3-D parameter, so thresholds,
N:M groups and random masks never cross the gate/up fusion nor an expert boundary.

    >>> [m.name.rsplit(".", 2)[1:] for m in expert_matrices("model.layers", model.model.layers)][:3]
    [['0', 'gate_proj'], ['0', 'up_proj'], ['0', 'down_proj']]
    >>> is_router(parent, "shared_expert_gate")      # Qwen2-MoE's scalar gate: decides routing, stays dense
    True

Routers — the experts' sibling modules whose weight has at most one row per expert (`gate`, Qwen2-MoE's
`shared_expert_gate`) — decide which experts run and how much each counts: they are never pruned.
Shared experts (Qwen2-MoE's `shared_expert`) are ordinary linears beside the experts and are pruned as such.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

# The 3-D parameters of a supported experts module: (name, parts it holds along dim 1, in order).
EXPERT_PARAMS = (("gate_up_proj", ("gate", "up")), ("up_proj", ("up",)), ("down_proj", ("down",)))
# Config keys that spell the number of routed experts / experts per token, in the families transformers has.
EXPERT_COUNT_KEYS = ("num_experts", "num_local_experts", "n_routed_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_topk")


@dataclass(frozen=True)
class ExpertMatrix:
    """One routed expert's gate, up or down matrix: rows `rows` of expert `expert` in a 3-D parameter."""

    name: str  # "model.layers.3.mlp.experts.5.gate_proj": the model's own module path + expert + projection
    block: int
    module: nn.Module  # the experts module holding the 3-D parameters
    experts_name: str  # "model.layers.3.mlp.experts"
    param: str  # "gate_up_proj" | "up_proj" | "down_proj"
    expert: int
    rows: tuple[int, int]  # slice of the expert's rows (gate: the first half of gate_up_proj, up: the second)
    part: str  # "gate" | "up" | "down"

    kind = "routed expert"

    @property
    def weight_name(self) -> str:
        """The name it goes by in records before saving (Qwen-style; `saved_names` gives the files' name)."""
        return f"{self.name}.weight"

    @property
    def module_name(self) -> str:
        return self.experts_name

    @property
    def in_features(self) -> int:
        return getattr(self.module, self.param).shape[-1]

    @property
    def out_features(self) -> int:
        return self.rows[1] - self.rows[0]

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features

    def matrix(self, tensor: torch.Tensor) -> torch.Tensor:
        """This expert matrix as a 2-D view of the whole 3-D parameter `tensor` (contiguous: rows of one expert)."""
        return tensor[self.expert, self.rows[0] : self.rows[1]]


def experts_layout(module: nn.Module) -> list[tuple[str, tuple[str, ...]]] | None:
    """The 3-D parameters of a supported experts module, with the parts each holds; None for any other module.

    Supported: transformers 5's `@use_experts_implementation` layout — [E, out, in] per parameter, gate and up
    concatenated (not interleaved), not transposed, no biases — with a down projection of shapes that fit."""
    params = dict(module.named_parameters(recurse=False))
    down = params.get("down_proj")
    if down is None or down.dim() != 3 or getattr(module, "is_transposed", False) \
            or not getattr(module, "is_concatenated", True) or getattr(module, "has_bias", False) \
            or any(p.dim() != 3 for p in params.values()):
        return None
    found = [(name, parts) for name, parts in EXPERT_PARAMS if name in params]
    if set(params) != {name for name, _ in found} or len(found) != 2:
        return None
    (first, parts), _ = found
    experts, hidden, intermediate = down.shape
    if tuple(params[first].shape) != (experts, len(parts) * intermediate, hidden):
        return None
    return found


def experts_modules(root: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """(qualified name, module) of every supported experts module under `root`, in module order."""
    for name, module in root.named_modules(prefix=prefix):
        if experts_layout(module) is not None:
            yield name, module


def num_experts(module: nn.Module) -> int:
    return module.down_proj.shape[0]


def matrices_of(experts_name: str, module: nn.Module, block: int) -> list[ExpertMatrix]:
    """Every expert's matrices, expert by expert (gate, up, down), as the files list them."""
    layout = experts_layout(module)
    assert layout is not None
    found = []
    for expert in range(num_experts(module)):
        for param, parts in layout:
            rows = getattr(module, param).shape[1] // len(parts)
            for i, part in enumerate(parts):
                found.append(ExpertMatrix(f"{experts_name}.{expert}.{part}_proj", block, module, experts_name, param,
                                          expert, (i * rows, (i + 1) * rows), part))
    return found


def expert_matrices(prefix: str, blocks: nn.ModuleList) -> list[ExpertMatrix]:
    """Every routed expert matrix inside the decoder blocks, block by block."""
    found: list[ExpertMatrix] = []
    for index, block in enumerate(blocks):
        for name, module in experts_modules(block, f"{prefix}.{index}"):
            found += matrices_of(name, module, index)
    return found


def moe_parents(block: nn.Module) -> dict[str, nn.Module]:
    """Modules (by name within `block`) that hold an experts module as a direct child: the MoE layers."""
    parents = {}
    for name, module in block.named_modules():
        if any(experts_layout(child) is not None for child in module.children()):
            parents[name] = module
    return parents


def is_router(parent: nn.Module, child_name: str) -> bool:
    """Whether `parent`'s child `child_name` is router-like: a sibling of the experts whose own weight has at most
    one row per expert (the top-k router `gate`; Qwen2-MoE's `shared_expert_gate`, one row)."""
    child = getattr(parent, child_name, None)
    weight = getattr(child, "weight", None) if child is not None else None
    experts = next((m for m in parent.children() if experts_layout(m) is not None), None)
    if experts is None or not isinstance(weight, torch.Tensor) or weight.dim() != 2 \
            or experts_layout(child) is not None:
        return False
    return weight.shape[0] <= num_experts(experts) and weight.shape[1] == experts.down_proj.shape[1]


def router_names(block: nn.Module) -> set[str]:
    """Names (within `block`) of its router-like modules: never pruned."""
    found = set()
    for parent_name, parent in moe_parents(block).items():
        for child_name, _ in parent.named_children():
            if is_router(parent, child_name):
                found.add(f"{parent_name}.{child_name}" if parent_name else child_name)
    return found


def routers(block: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """(router, experts) pairs of a block: the top-k router (one row per expert) beside each experts module."""
    pairs = []
    for parent in moe_parents(block).values():
        experts = next(m for m in parent.children() if experts_layout(m) is not None)
        for _, child in parent.named_children():
            weight = getattr(child, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[0] == num_experts(experts) \
                    and experts_layout(child) is None:
                pairs.append((child, experts))
    return pairs


def config_value(config, keys: tuple[str, ...]) -> int | None:
    """The first of `keys` the (text) config sets to an int."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in keys:
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def has_experts(model: nn.Module) -> bool:
    return any(experts_layout(m) is not None for m in model.modules())


def moe_facts(model: nn.Module) -> dict | None:
    """What the card says about the experts before pruning: MoE layers, routed experts per layer, experts per
    token, shared experts; None for a dense model."""
    found = [m for m in model.modules() if experts_layout(m) is not None]
    if not found:
        return None
    config = getattr(model, "config", None)
    parents = [p for p in model.modules() if any(c is e for c in p.children() for e in found)]
    shared = any(isinstance(m, nn.Linear) and not any(m is r for r in _router_modules(p))
                 for p in parents for child in p.children() if experts_layout(child) is None
                 for m in child.modules())
    return {"moe_layers": len(found), "experts_per_layer": sorted({num_experts(m) for m in found}),
            "experts_per_token": config_value(config, TOP_K_KEYS) if config is not None else None,
            "shared_experts": shared}


def _router_modules(parent: nn.Module) -> list[nn.Module]:
    return [child for name, child in parent.named_children() if is_router(parent, name)]
