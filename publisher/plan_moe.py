"""`plan` for mixture-of-experts models: total and active-per-token parameters, prunable parameters per kind
(attention / routed experts / shared experts / dense MLP) and their memory, from the config alone.

Active per token: every parameter a token's forward pass reads — all of them but the routed experts it is not
sent to, i.e. total − Σ over MoE layers (experts − top-k) × one expert's parameters (embeddings and LM head
count, as in the published "A3B" / "12.9B active" figures).

    >>> moe_plan(skeleton, prunable_matrices(skeleton), bytes_per=2)["active_params"]
    3345863680
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .prune.experts import TOP_K_KEYS, config_value, experts_layout, num_experts, routers
from .prune.scope import PrunableMatrix, find_decoder_blocks, matrix_kind


def moe_plan(model: nn.Module, matrices: list[PrunableMatrix], *, bytes_per: int) -> dict[str, Any] | None:
    """The MoE figures of a (meta-device) model; None for a dense model."""
    _, blocks = find_decoder_blocks(model)
    layers = [(block, m) for block in blocks for m in block.modules() if experts_layout(m) is not None]
    if not layers:
        return None
    config = getattr(model, "config", None)
    default_top_k = config_value(config, TOP_K_KEYS) if config is not None else None
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    expert_counts, top_ks = set(), set()
    for block, experts in layers:
        top_k = next((getattr(r, "top_k", None) for r, e in routers(block) if e is experts), None) or default_top_k
        per_expert = sum(p.numel() for p in experts.parameters(recurse=False)) // num_experts(experts)
        inactive += (num_experts(experts) - top_k) * per_expert
        expert_counts.add(num_experts(experts))
        top_ks.add(top_k)
    kinds: dict[str, dict[str, int]] = {}
    for matrix in matrices:
        entry = kinds.setdefault(matrix_kind(matrix, model), {"params": 0, "matrices": 0})
        entry["params"] += matrix.numel
        entry["matrices"] += 1
    for entry in kinds.values():
        entry["bytes"] = entry["params"] * bytes_per
    routers_params = sum(r.weight.numel() for block, _ in layers for r, _e in routers(block))
    return {
        "moe_layers": len(layers), "experts_per_layer": sorted(expert_counts), "experts_per_token": sorted(top_ks),
        "total_params": total, "active_params": total - inactive, "active_bytes": (total - inactive) * bytes_per,
        "prunable_by_kind": kinds, "router_params": routers_params,
    }


def moe_lines(moe: dict[str, Any]) -> list[str]:
    """The plan table's MoE lines."""
    gib = 1024**3
    experts = "/".join(map(str, moe["experts_per_layer"]))
    top_k = "/".join(map(str, moe["experts_per_token"]))
    kinds = "; ".join(f"{kind} {x['params']:,} in {x['matrices']} matrices ({x['bytes'] / gib:.2f} GiB)"
                      for kind, x in moe["prunable_by_kind"].items())
    return [
        f"  experts             {moe['moe_layers']} MoE layers × {experts} routed experts, {top_k} per token; "
        f"routers ({moe['router_params']:,} parameters) are not pruned",
        f"  active per token    {moe['active_params']:,} of {moe['total_params']:,} parameters "
        f"({moe['active_bytes'] / gib:.2f} GiB)",
        f"  prunable by kind    {kinds}",
    ]
