"""Expert dropping: remove whole routed experts from every MoE layer, ranked by a saliency measured on the
calibration set. The output is a smaller model that every loader reads as an ordinary checkpoint.

    >>> prune_model(model, PruneRequest("expert-drop", 0.0, calibration=ids, experts_keep=0.5))
    >>> prune_model(model, PruneRequest("expert-drop", 0.0, calibration=ids, experts_keep_n=4,
    ...                                 expert_saliency="frequency"))

Saliency of expert j in one layer, over the calibration tokens its router sends it (block by block: each block
sees the outputs of the blocks before it, their experts already dropped, as Wanda and SparseGPT do):

- `reap` (REAP, router-weighted expert activation pruning; Lasby et al., Cerebras 2025): the mean over those
  tokens of g_j(x)·‖E_j(x)‖₂, the routing weight times the L2 norm of the expert's output — what the expert
  adds to the block's output where it is used; an expert no token reaches scores 0;
- `frequency` (the baseline): how many tokens the router sends it.

Each layer keeps its K most salient experts (`experts_keep_n`, or ⌈F·E⌉ for `experts_keep` F; ties go to the
lower index), in their original order. The experts' 3-D tensors and the router's rows are cut to them, the
router's other per-expert tensors (a score bias) too; `num_experts` / `num_local_experts` become K and
`num_experts_per_tok` becomes min(top-k, K). Nothing else changes: the kept experts and every other weight are
bit-identical to the base, and routing among the kept experts is the base router's (softmax over K logits).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import SettingsError
from . import register
from .experts import EXPERT_COUNT_KEYS, TOP_K_KEYS, config_value, experts_modules, num_experts, routers
from .moe_calibration import _intermediate
from .moe_options import check_keep
from .scope import find_decoder_blocks
from .sequential import BlockRunner


def experts_to_keep(request: Any, experts: int) -> int:
    """K for a layer of `experts` routed experts: `experts_keep_n`, or ⌈F·E⌉ for `experts_keep` F."""
    if request.experts_keep_n is not None:
        return int(request.experts_keep_n)
    return math.ceil(request.experts_keep * experts - 1e-9)  # 0.5 × 8 = 4, not 5 from a rounding error


def check_drop_request(model: nn.Module, request: Any) -> None:
    """One-line errors for expert dropping: a dense model, keep settings, structure, placement."""
    counts = {num_experts(m) for _, m in experts_modules(model)}
    if not counts:
        raise SettingsError(f"expert-drop removes experts of a mixture-of-experts model; {type(model).__name__} "
                            "has none (use --method magnitude, random, wanda or sparsegpt)")
    check_keep(experts_keep=request.experts_keep, experts_keep_n=request.experts_keep_n,
               unstructured=request.nm.unstructured)
    if len(counts) > 1:
        raise SettingsError(f"the MoE layers hold different numbers of experts ({sorted(counts)}); one config value "
                            "cannot describe them after dropping")
    (experts,) = counts
    keep = experts_to_keep(request, experts)
    if not 1 <= keep < experts:
        raise SettingsError(f"expert-drop must keep between 1 and {experts - 1} of the {experts} experts per layer, "
                            f"got {keep}")
    if getattr(model, "hf_device_map", None):
        raise SettingsError("expert-drop rewrites the experts' tensors in place: run it without --device-map")


class _Saliency:
    """Pre-hook on one experts module: per expert, routed tokens and Σ g·‖E(x)‖ over them."""

    def __init__(self, model: nn.Module, name: str, module: nn.Module, reap: bool):
        self.model, self.name, self.module, self.reap = model, name, module, reap
        self.tokens = torch.zeros(num_experts(module), dtype=torch.int64)
        self.weighted = torch.zeros(num_experts(module), dtype=torch.float64)

    def __call__(self, _module, args, kwargs) -> None:
        hidden = args[0] if args else kwargs["hidden_states"]
        index = args[1] if len(args) > 1 else kwargs["top_k_index"]
        weights = args[2] if len(args) > 2 else kwargs["top_k_weights"]
        hidden = hidden.reshape(-1, hidden.shape[-1])
        top_k = index.shape[-1]
        flat = index.reshape(-1)
        self.tokens += torch.bincount(flat, minlength=len(self.tokens)).cpu()[: len(self.tokens)]
        if not self.reap:
            return
        for e in torch.unique(flat).tolist():
            picked = torch.nonzero(flat == e).view(-1)
            x, g = hidden[picked // top_k], weights.reshape(-1)[picked].to(torch.float32)
            h = _intermediate(self.model, self.name, self.module, e, x, None)
            down = self.module.down_proj[e].to(device=h.device, dtype=torch.float32)
            norms = torch.linalg.vector_norm(nn.functional.linear(h, down), dim=-1)
            self.weighted[e] += float((g * norms).sum())

    def scores(self) -> torch.Tensor:
        if not self.reap:
            return self.tokens.to(torch.float64)
        return self.weighted / self.tokens.clamp(min=1)  # mean over routed tokens; 0 where none was routed


def _cut_rows_(module: nn.Module, experts: int, kept: torch.Tensor) -> None:
    """Keep rows `kept` of every parameter and buffer of `module` (not its children) whose first dim is `experts`."""
    for name, param in list(module.named_parameters(recurse=False)):
        if param.dim() and param.shape[0] == experts:
            setattr(module, name, nn.Parameter(param.data[kept.to(param.device)].clone(),
                                               requires_grad=param.requires_grad))
    for name, buffer in list(module.named_buffers(recurse=False)):
        if buffer is not None and buffer.dim() and buffer.shape[0] == experts:
            setattr(module, name, buffer[kept.to(buffer.device)].clone())


def _set_counts(obj: Any, experts: int, keep: int, top_k_keys: tuple[str, ...] = TOP_K_KEYS) -> None:
    """Expert-count attributes that said `experts` say `keep`; top-k attributes above `keep` become `keep`."""
    for key in EXPERT_COUNT_KEYS:
        if getattr(obj, key, None) == experts:
            setattr(obj, key, keep)
    for key in top_k_keys:
        value = getattr(obj, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > keep:
            setattr(obj, key, keep)


def drop_experts_(block: nn.Module, keep: dict[int, list[int]]) -> None:
    """Cut each experts module of `block` (by id) and its router to the kept experts, in place."""
    parents = {id(child): parent for parent in block.modules() for child in parent.children()}
    for router, experts in routers(block):
        kept = keep.get(id(experts))
        if kept is None:
            continue
        total, index = num_experts(experts), torch.tensor(sorted(kept))
        for module in (router, experts):
            _cut_rows_(module, total, index)
        for obj in (router, experts, parents.get(id(experts))):
            if obj is not None:  # a module's `top_k` is its router's; a config's would be a generation default
                _set_counts(obj, total, len(kept), (*TOP_K_KEYS, "top_k"))


@register(
    "expert-drop",
    description="""Expert dropping removes whole routed experts from every mixture-of-experts layer and keeps the
    K most salient of each layer, ranked on the calibration set, block by block: by the REAP criterion (Lasby et
    al., Cerebras 2025) — the mean, over the tokens the router sends an expert, of the routing weight times the
    L2 norm of the expert's output — or, as a baseline, by how many tokens the router sends it. The dropped
    experts' tensors and their router rows are removed and the config's expert count updated (experts per
    token at most the experts left): a smaller model, not a sparser one; every kept weight is the base's.""",
    needs_calibration=True,
    drops_experts=True,
)
def prune_expert_drop(model, layers, request, done) -> dict:
    reap = request.expert_saliency == "reap"
    params_before = sum(p.numel() for p in model.parameters())
    config = model.config.get_text_config() if hasattr(model, "config") else None
    top_k_before = config_value(config, TOP_K_KEYS) if config is not None else None
    runner = BlockRunner(model, request.calibration, activation_budget_bytes=request.activation_budget_bytes)
    prefix, blocks = find_decoder_blocks(model)
    by_block: dict[int, list] = {}
    for layer in layers:
        by_block.setdefault(layer.block, []).append(layer)
    report, experts_before, keep_n = [], None, None
    for index in range(runner.num_blocks):
        found = list(experts_modules(blocks[index], f"{prefix}.{index}"))
        if found:
            hooks = [_Saliency(model, name, module, reap) for name, module in found]
            handles = [m.register_forward_pre_hook(h, with_kwargs=True) for (_, m), h in zip(found, hooks, strict=True)]
            try:
                with torch.no_grad():
                    runner.run(index)
            finally:
                for handle in handles:
                    handle.remove()
            keep: dict[int, list[int]] = {}
            for (_, module), hook in zip(found, hooks, strict=True):
                experts_before = num_experts(module)
                keep_n = experts_to_keep(request, experts_before)
                scores = hook.scores()
                # most salient first; ties to the lower index (a stable sort of the negated scores)
                order = torch.sort(-scores, stable=True).indices[:keep_n]
                kept = sorted(order.tolist())
                keep[id(module)] = kept
                report.append({"block": index, "kept": kept, "routed_tokens": hook.tokens.tolist(),
                               "saliency": [round(float(x), 6) for x in scores]})
            drop_experts_(blocks[index], keep)
        for layer in by_block.get(index, []):
            done(layer)
        if index + 1 < runner.num_blocks:
            with torch.no_grad():
                runner.run(index, keep_outputs=True)
    if config is not None:
        _set_counts(config, experts_before, keep_n)
    params_after = sum(p.numel() for p in model.parameters())
    return {**runner.timings.as_dict(), "moe": {"expert_drop": {
        "saliency": request.expert_saliency, "experts_before": experts_before, "experts_kept": keep_n,
        "dropped_share": round(1 - keep_n / experts_before, 6),
        "top_k_before": top_k_before, "top_k_after": config_value(config, TOP_K_KEYS) if config is not None else None,
        "params_before": params_before, "params_after": params_after, "layers": report}}}
