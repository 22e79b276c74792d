"""Which weights are prunable: every `nn.Linear` inside the decoder blocks (protocol.md §2), and in a
mixture-of-experts model every routed expert's gate, up and down matrix (`experts.py`).

Attention projections and MLP (fused ones such as Phi-3's `qkv_proj` and `gate_up_proj` included);
never embeddings, the LM head or norms, which live outside the blocks or are not linears, nor an MoE
layer's routers (`gate`, Qwen2-MoE's `shared_expert_gate`), which decide which experts run.

    >>> blocks = find_decoder_blocks(model)        # ("model.layers", ModuleList[...])
    >>> [p.name for p in prunable_linears(model)][:2]
    ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj']
    >>> prunable_matrices(moe_model)[-1].name       # linears, then the experts' matrices of the same block
    'model.layers.1.mlp.experts.3.down_proj'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ArchitectureError
from .experts import ExpertMatrix, expert_matrices, experts_layout, moe_parents, router_names

SCOPE_DESCRIPTION = (
    "every nn.Linear weight inside the decoder blocks (attention and MLP projections); "
    "embeddings, LM head and norms untouched"
)
MOE_SCOPE_DESCRIPTION = (
    "every nn.Linear weight inside the decoder blocks (attention projections, shared experts' projections) and "
    "every routed expert's gate, up and down matrix, each pruned as its own matrix; routers (gate, "
    "shared_expert_gate), embeddings, LM head and norms untouched"
)


@dataclass(frozen=True)
class PrunableLinear:
    name: str  # module name, e.g. "model.layers.3.mlp.down_proj"
    block: int  # index of the decoder block it belongs to
    module: nn.Linear

    @property
    def weight_name(self) -> str:
        """The tensor's key in the state dict and the saved checkpoint."""
        return f"{self.name}.weight"

    # The interface it shares with `ExpertMatrix`: where the parameter lives and the 2-D matrix in it.
    param = "weight"

    @property
    def module_name(self) -> str:
        return self.name

    @property
    def in_features(self) -> int:
        return self.module.in_features

    @property
    def numel(self) -> int:
        return self.module.weight.numel()

    def matrix(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor


PrunableMatrix = PrunableLinear | ExpertMatrix


def find_decoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of repeated decoder blocks: the one holding the most Linear parameters."""
    best: tuple[int, str, nn.ModuleList] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        linear_params = sum(
            m.weight.numel() for block in module for m in block.modules() if isinstance(m, nn.Linear)
        )
        if linear_params and (best is None or linear_params > best[0]):
            best = (linear_params, name, module)
    if best is None:
        top = ", ".join(f"{n} ({type(m).__name__})" for n, m in model.named_children()) or "nothing"
        raise ArchitectureError(
            f"no decoder blocks found in {type(model).__name__}: expected a list of blocks holding "
            f"nn.Linear layers; top-level modules are {top}"
        )
    return best[1], best[2]


def prunable_linears(model: nn.Module) -> list[PrunableLinear]:
    """Every Linear inside the decoder blocks but MoE routers, in block order then module order."""
    prefix, blocks = find_decoder_blocks(model)
    found = []
    for index, block in enumerate(blocks):
        routers = router_names(block)
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear) and name not in routers:
                found.append(PrunableLinear(f"{prefix}.{index}.{name}", index, module))
    return found


def prunable_matrices(model: nn.Module) -> list[PrunableMatrix]:
    """`prunable_linears` and every routed expert's matrices, block by block (a dense model: the linears)."""
    prefix, blocks = find_decoder_blocks(model)
    linears, experts = prunable_linears(model), expert_matrices(prefix, blocks)
    if not experts:
        return list(linears)
    return sorted([*linears, *experts], key=lambda x: x.block)  # stable: linears first within a block


def scope_description(model: nn.Module) -> str:
    """What was prunable, in words for the card: the MoE wording when the blocks hold experts."""
    _, blocks = find_decoder_blocks(model)
    return MOE_SCOPE_DESCRIPTION if any(moe_parents(block) for block in blocks) else SCOPE_DESCRIPTION


def matrix_kind(matrix: PrunableMatrix, model: nn.Module) -> str:
    """"routed expert", "shared expert" (a linear inside an MoE layer beside its experts), "attention" or "mlp"."""
    if isinstance(matrix, ExpertMatrix):
        return matrix.kind
    prefix, blocks = find_decoder_blocks(model)
    inner = matrix.name.removeprefix(f"{prefix}.{matrix.block}.")
    if any(inner.startswith(f"{parent}.") for parent in moe_parents(blocks[matrix.block]) if parent):
        return "shared expert"
    return "attention" if any(word in inner for word in ("attn", "attention")) else "mlp"


# Share of the blocks' matrix weights that may lie outside nn.Linear before pruning the linears alone would
# misstate the model's sparsity (mixture-of-experts models keep their experts as 3-D tensors).
UNPRUNABLE_LIMIT = 0.01


def unprunable_weights(model: nn.Module) -> tuple[float, str | None]:
    """The share of the decoder blocks' weights of 2+ dimensions that are not nn.Linear weights, and the first of
    the largest such parameters, named with its dimensions (None when there is none). Norms, biases and other
    1-D parameters do not count."""
    prefix, blocks = find_decoder_blocks(model)
    linear = {id(m.weight) for m in blocks.modules() if isinstance(m, nn.Linear)}
    # Supported experts are pruned matrix by matrix; routers are left dense on purpose (they are not linears in
    # transformers 5 and would otherwise count as weights left out by accident).
    linear |= {id(p) for m in blocks.modules() if experts_layout(m) is not None for p in m.parameters(recurse=False)}
    for block in blocks:
        linear |= {id(p) for name in router_names(block) for p in block.get_submodule(name).parameters()}
    inside = outside = largest = 0
    example = None
    for name, param in blocks.named_parameters():
        if param.dim() < 2:
            continue
        if id(param) in linear:
            inside += param.numel()
            continue
        outside += param.numel()
        if param.numel() > largest:  # the first of the largest
            largest, example = param.numel(), f"{prefix}.{name} ({param.dim()}-D)"
    return outside / max(1, inside + outside), example


def check_prunable_scope(model: nn.Module) -> None:
    """Raise ArchitectureError when pruning the linears (and supported experts) would leave much of the blocks
    dense (experts in another layout, e.g. transposed or with biases; recurrent gates)."""
    share, example = unprunable_weights(model)
    if share > UNPRUNABLE_LIMIT:
        raise ArchitectureError(
            f"{type(model).__name__} keeps {share:.1%} of its decoder blocks' weights outside nn.Linear and the "
            f"expert layouts this tool reads (e.g. {example}): pruning the rest would leave them dense and overstate "
            "the model's sparsity; models whose blocks hold such weights (experts stored transposed, interleaved or "
            "with biases, some recurrent layers) are not supported")
