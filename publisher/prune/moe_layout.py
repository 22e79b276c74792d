"""Where `save_pretrained` writes each tensor of a mixture-of-experts model: the base's per-expert names.

transformers reverses its load-time conversion when it saves (`revert_weight_conversion`): the 3-D experts
become one tensor per expert and projection again, under the base's names (Qwen: `mlp.experts.N.gate_proj`;
Mixtral: `block_sparse_moe.experts.N.w1`, with its router renamed back to `block_sparse_moe.gate`). We ask
transformers itself, with placeholders that hold no weights — a meta stand-in for every other tensor (followed
by identity), a tiny [E, parts, 1] tensor numbering the pieces of each expert parameter — so each saved tensor
tells which expert and which rows (gate: the first half of `gate_up_proj`, up: the second) it holds.

    >>> layout = saved_layout(skeleton)                    # works on a meta-device model
    >>> layout["model.layers.0.block_sparse_moe.experts.1.w3.weight"]
    SavedPiece(source='model.layers.0.mlp.experts.gate_up_proj', expert=1, rows=(16, 32), shape=(16, 32))
    >>> expert_saved_names(model)["model.layers.0.mlp.experts.1.up_proj.weight"]
    'model.layers.0.block_sparse_moe.experts.1.w3.weight'
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .experts import experts_layout, experts_modules


class LayoutError(Exception):
    """transformers would save these experts in a way this tool cannot map tensor by tensor."""


@dataclass(frozen=True)
class SavedPiece:
    """One saved tensor: the model state-dict key it comes from and, for an expert's matrix, which slice."""

    source: str
    expert: int | None
    rows: tuple[int, int] | None
    shape: tuple[int, ...]
    part: str | None = None  # "gate" | "up" | "down" for an expert's matrix

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.expert is None else tensor[self.expert, self.rows[0] : self.rows[1]]

    @property
    def model_name(self) -> str:
        """The name the tool's records use before saving (`ExpertMatrix.weight_name`, or the state-dict key)."""
        if self.expert is None:
            return self.source
        return f"{self.source.rsplit('.', 1)[0]}.{self.expert}.{self.part}_proj.weight"


def saved_layout(model: nn.Module, keys: list[str] | None = None) -> dict[str, SavedPiece]:
    """Saved name → where its values come from, for the state-dict `keys` (default: all, tied duplicates
    excluded), in the order transformers lists them. Raises LayoutError if a piece cannot be traced."""
    from transformers.core_model_loading import revert_weight_conversion

    state = model.state_dict()
    keys = list(state) if keys is None else keys
    experts: dict[str, tuple[tuple[str, ...], tuple[int, ...]]] = {}
    for name, module in experts_modules(model):
        for param, parts in experts_layout(module):
            experts[f"{name}.{param}"] = (parts, tuple(getattr(module, param).shape))
    placeholders: dict[str, torch.Tensor] = {}
    pieces: list[tuple[str, int, int]] = []  # numbered: (source key, expert, part index)
    for key in keys:
        if key in experts:
            parts, shape = experts[key]
            start = len(pieces)
            pieces += [(key, e, i) for e in range(shape[0]) for i in range(len(parts))]
            placeholders[key] = torch.arange(start, len(pieces), dtype=torch.float64).view(shape[0], len(parts), 1)
        else:
            placeholders[key] = torch.empty(0, device="meta")
    owner = {id(t): k for k, t in placeholders.items() if k not in experts}
    layout: dict[str, SavedPiece] = {}
    for saved, tensor in revert_weight_conversion(model, dict(placeholders)).items():
        if id(tensor) in owner:
            source = owner[id(tensor)]
            layout[saved] = SavedPiece(source, None, None, tuple(state[source].shape))
            continue
        if tensor.device.type == "meta" or tensor.numel() != 1:
            raise LayoutError(f"transformers saves {saved} converted from several tensors; cannot map it")
        source, expert, i = pieces[int(tensor.item())]
        parts, shape = experts[source]
        rows = shape[1] // len(parts)
        layout[saved] = SavedPiece(source, expert, (i * rows, (i + 1) * rows), (rows, shape[2]), parts[i])
    return layout


def expert_saved_names(model: nn.Module) -> dict[str, str]:
    """Each expert matrix's record name (`…experts.N.gate_proj.weight`) → the name save_pretrained writes;
    empty for a dense model."""
    keys = [f"{name}.{param}" for name, module in experts_modules(model) for param, _ in experts_layout(module)]
    if not keys:
        return {}
    return {piece.model_name: saved for saved, piece in saved_layout(model, keys).items()}
