"""Wanda (Sun et al., ICLR 2024): prune the lowest |W_ij|·‖X_j‖₂ of each output row.

    >>> prune_model(model, PruneRequest("wanda", 0.5, calibration=calib.input_ids))
    >>> prune_model(model, PruneRequest("wanda", 0.5, structure="2:4", calibration=calib.input_ids))

‖X_j‖₂ is the L2 norm of input feature j over every calibration token, captured with a forward pre-hook on
every prunable linear (o_proj and down_proj included, which the study's implementation skipped), block by
block with the pruned blocks' outputs feeding the next (`sequential.py`). Scores are fp32 whatever the
weights' dtype.

Unstructured: each row loses its k_row = ⌊in·s⌋ lowest scores (ties by position, as a stable sort); when
rows × ⌊in·s⌋ falls short of ⌊rows·in·s⌋, the remaining few weights go to the rows whose next-lowest score
is the lowest, so every matrix hits the target exactly (the reference's per-row cut can miss it by up to
one weight per row). N:M: the N lowest scores of every group of M inputs in each row.
"""

from __future__ import annotations

import math

import torch

from . import register
from .masks import zero_masked_
from .nm import nm_mask, rows_per_chunk
from .scope import PrunableMatrix
from .sequential import prune_sequentially


class SquaredNorms:
    """Σ x_j² over all tokens, per input feature, accumulated in fp32 (‖X_j‖₂ = sqrt of it)."""

    def __init__(self, in_features: int, device: torch.device):
        self.sum_sq = torch.zeros(in_features, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        self.sum_sq += torch.linalg.vector_norm(x, dim=0, dtype=torch.float32).square()
        self.tokens += x.shape[0]

    def norms(self) -> torch.Tensor:
        return self.sum_sq.sqrt()


@register(
    "wanda",
    description="""Wanda (Sun et al., 2024) scores each weight by |W_ij|·‖X_j‖₂, the weight's magnitude times
    the L2 norm of its input feature over the calibration tokens, and prunes the lowest scores of every output
    row (with an N:M structure, the N lowest of each group of M inputs). Inputs are captured for every prunable
    linear, block by block, each block seeing the outputs of the already pruned blocks before it.""",
    needs_calibration=True,
)
def prune_wanda(model, layers, request, done) -> dict:
    structure = request.nm

    def prune_layer(layer: PrunableMatrix, stats: SquaredNorms, weight: torch.Tensor) -> None:
        norms = stats.norms()
        if structure.unstructured:
            wanda_unstructured_(weight, norms, request.sparsity)
        else:
            wanda_nm_(weight, norms, structure.n, structure.m)

    timings = prune_sequentially(model, layers, request.calibration, stats_type=SquaredNorms,
                                 prune_layer=prune_layer, done=done,
                                 activation_budget_bytes=request.activation_budget_bytes,
                                 moe_calibration=request.moe_calibration)
    return {**timings.as_dict(), **({"moe": timings.moe} if timings.moe else {})}


def wanda_scores(weight: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
    """|W|·‖X‖ in fp32 (rows × inputs); `norms` is ‖X_j‖₂ per input."""
    return weight.abs().float().mul_(norms.to(weight.device).view(1, -1))


def wanda_unstructured_(weight: torch.Tensor, norms: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Zero exactly ⌊rows·in·s⌋ weights, the lowest scores per row (see module doc); returns `weight`."""
    rows, cols = weight.shape
    total = math.floor(rows * cols * sparsity)
    base, extra = divmod(total, rows)
    step = rows_per_chunk(cols)
    next_scores, next_cols = [], []
    for start in range(0, rows, step):
        part = weight[start : start + step]
        scores = wanda_scores(part, norms)
        order = torch.sort(scores, dim=1, stable=True).indices
        mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
        mask.scatter_(1, order[:, :base], True)
        zero_masked_(part, mask)
        if extra:
            next_cols.append(order[:, base])
            next_scores.append(scores.gather(1, order[:, base : base + 1]).squeeze(1))
    if extra:
        candidates, columns = torch.cat(next_scores), torch.cat(next_cols)
        chosen = torch.sort(candidates, stable=True).indices[:extra]
        weight[chosen, columns[chosen]] = 0
    return weight


def wanda_nm_(weight: torch.Tensor, norms: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Zero the n lowest |W|·‖X‖ of every group of m inputs in each row; returns `weight`."""
    rows, cols = weight.shape
    step = rows_per_chunk(cols)
    for start in range(0, rows, step):
        part = weight[start : start + step]
        zero_masked_(part, nm_mask(wanda_scores(part, norms), n, m))
    return weight
