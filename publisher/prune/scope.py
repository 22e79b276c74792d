"""Which weights are prunable: every `nn.Linear` inside the decoder blocks (protocol.md §2).

Attention projections and MLP (fused ones such as Phi-3's `qkv_proj` and `gate_up_proj` included);
never embeddings, the LM head or norms, which live outside the blocks or are not linears.

    >>> blocks = find_decoder_blocks(model)        # ("model.layers", ModuleList[...])
    >>> [p.name for p in prunable_linears(model)][:2]
    ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.k_proj']
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..errors import ArchitectureError

SCOPE_DESCRIPTION = (
    "every nn.Linear weight inside the decoder blocks (attention and MLP projections); "
    "embeddings, LM head and norms untouched"
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
    """Every Linear inside the decoder blocks, in block order then module order."""
    prefix, blocks = find_decoder_blocks(model)
    found = []
    for index, block in enumerate(blocks):
        for name, module in block.named_modules():
            if isinstance(module, nn.Linear):
                found.append(PrunableLinear(f"{prefix}.{index}.{name}", index, module))
    return found


# Share of the blocks' matrix weights that may lie outside nn.Linear before pruning the linears alone would
# misstate the model's sparsity (mixture-of-experts models keep their experts as 3-D tensors).
UNPRUNABLE_LIMIT = 0.01


def unprunable_weights(model: nn.Module) -> tuple[float, str | None]:
    """The share of the decoder blocks' weights of 2+ dimensions that are not nn.Linear weights, and the first of
    the largest such parameters, named with its dimensions (None when there is none). Norms, biases and other
    1-D parameters do not count."""
    prefix, blocks = find_decoder_blocks(model)
    linear = {id(m.weight) for m in blocks.modules() if isinstance(m, nn.Linear)}
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
    """Raise ArchitectureError when pruning the linears alone would leave much of the blocks dense (MoE experts
    kept as 3-D tensors, recurrent gates)."""
    share, example = unprunable_weights(model)
    if share > UNPRUNABLE_LIMIT:
        raise ArchitectureError(
            f"{type(model).__name__} keeps {share:.1%} of its decoder blocks' weights outside nn.Linear (e.g. "
            f"{example}): pruning the linears alone would leave them dense and overstate the model's sparsity; "
            "models whose blocks hold such weights (mixture-of-experts experts, some recurrent layers) are not "
            "supported")
