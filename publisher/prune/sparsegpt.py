"""SparseGPT (Frantar & Alistarh 2023): prune with OBS reconstruction of each layer's outputs.

    >>> prune_model(model, PruneRequest("sparsegpt", 0.5, calibration=calib.input_ids))
    >>> sparsegpt_prune_(weight, hessian, sparsity=0.5)        # one matrix, given H = 2/N Σ x xᵀ

Follows the reference (`IST-DASLab/sparsegpt`, `SparseGPT.fasterprune`):
- H = 2/N Σ x xᵀ over the N calibration tokens reaching the layer, accumulated in fp32 (also for bf16/fp16
  weights; the result is cast back to the weight's dtype). Linears fed the same tensor (q/k/v; gate/up)
  share one H, and its inverse factor is computed once.
- Dead inputs (H_jj = 0): H_jj := 1 and column j of W := 0, as in the reference.
- Dampening: λ = 1 % of mean(diag H) added to the diagonal; then U = chol(H⁻¹) (upper), via
  cholesky → cholesky_inverse → cholesky(upper=True).
- Columns in blocks of 128 (lazy batch updates). Unstructured: at the start of each block, the mask is the
  lowest w²/U_jj² of that block (all rows together); N:M: at the start of each group of M columns, the N
  lowest w²/U_jj² of the group in each row. Column by column, a pruned weight's error (w/U_jj) is spread
  over the remaining columns of the block (row of U), then the block's error over the later columns.
- One deviation: the reference marks every score ≤ the k-th (0-based ⌊n·s⌋) of a block, i.e. ⌊n·s⌋ + 1
  weights or more; here each block prunes exactly ⌊rows·i₂·s⌋ − ⌊rows·i₁·s⌋ (ties by input, then row), so every
  matrix hits ⌊rows·in·s⌋ exactly.
"""

from __future__ import annotations

import contextlib
import math

import torch

from . import register
from .masks import _one_cpu_thread, lowest_k_mask
from .scope import PrunableMatrix
from .sequential import prune_sequentially

SINGLE_THREAD_FACTOR = 4096  # Hessians up to this size are factorised on one CPU thread (see inverse_cholesky)


class Hessian:
    """Σ x xᵀ over all tokens in fp32 (in × in), with the token count; `matrix()` gives 2/N Σ x xᵀ."""

    def __init__(self, in_features: int, device: torch.device):
        self.sum = torch.zeros(in_features, in_features, dtype=torch.float32, device=device)
        self.tokens = 0
        self._factor: tuple[torch.Tensor, torch.Tensor] | None = None

    def add(self, x: torch.Tensor) -> None:
        x = x.to(device=self.sum.device, dtype=torch.float32)
        self.sum.addmm_(x.T, x)
        self.tokens += x.shape[0]

    def matrix(self) -> torch.Tensor:
        return self.sum * (2.0 / max(1, self.tokens))

    def inverse_factor(self, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(U = upper Cholesky factor of the dampened H⁻¹, dead-input mask); computed once, then cached."""
        if self._factor is None:
            self._factor = inverse_cholesky(self.matrix(), damp)
            self.sum = torch.empty(0)  # free the accumulator; the factor is all that is needed now
        return self._factor


def inverse_cholesky(hessian: torch.Tensor, damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """U with UᵀU = (H + λI)⁻¹, λ = damp·mean(diag H), after the reference's dead-input fix; and the dead mask."""
    if hessian.device.type == "mps":  # no float32 cholesky_inverse there: factor on the CPU, move back
        u, dead = inverse_cholesky(hessian.cpu(), damp)
        return u.to(hessian.device), dead.to(hessian.device)
    h = hessian.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    diag = torch.arange(h.shape[0], device=h.device)
    h[diag, diag] += damp * torch.mean(torch.diag(h))
    # LAPACK's many fork/joins: on 2 busy cores a 1536² factorisation took 1.0 s with 2 threads, 0.22 s with
    # one (0.10 s / 0.11 s idle); only large matrices are worth the threads.
    threads = _one_cpu_thread(h.device) if h.shape[0] <= SINGLE_THREAD_FACTOR else contextlib.nullcontext()
    try:
        with threads:
            h = torch.linalg.cholesky(h)
            h = torch.cholesky_inverse(h)
            return torch.linalg.cholesky(h, upper=True), dead
    except torch.linalg.LinAlgError as error:
        raise torch.linalg.LinAlgError(f"SparseGPT: the dampened Hessian is not positive definite ({error}); "
                                       "use more calibration tokens or a larger dampening") from None


def sparsegpt_prune_(weight: torch.Tensor, hessian: torch.Tensor | None = None, *, sparsity: float,
                     n: int = 0, m: int = 0, block_size: int = 128, damp: float = 0.01,
                     factor: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Prune `weight` (rows × in) in place by SparseGPT; pass the Hessian or its `inverse_cholesky` factor.

    `n`, `m` > 0 → N:M (`sparsity` is then n/m). Works in fp32, writes back in the weight's dtype.
    The work is done on Wᵀ (inputs × rows, contiguous), so that a column of W is a contiguous row, and the
    column loop runs on one intra-op thread: its ops are tiny, and on 2 busy cores a 2-thread fork/join per
    op made it ~60× slower (1.7 ms against 27 µs per column of 576 rows).
    """
    u, dead = factor if factor is not None else inverse_cholesky(hessian, damp)
    wt = weight.detach().to(device=u.device, dtype=torch.float32).t().contiguous()  # inputs × rows
    cols, rows = wt.shape
    wt[dead] = 0
    if m:
        block_size = max(m, block_size // m * m)  # groups of m must not straddle blocks
    with _one_cpu_thread(wt.device):
        for i1 in range(0, cols, block_size):
            i2 = min(i1 + block_size, cols)
            w1 = wt[i1:i2]  # a view: updated in place
            u1 = u[i1:i2, i1:i2]
            d = torch.diag(u1)
            err = torch.zeros_like(w1)
            if m:
                prune = torch.zeros_like(w1)
            else:
                k = math.floor(rows * i2 * sparsity) - math.floor(rows * i1 * sparsity)
                prune = lowest_k_mask(w1.square() / d.square().view(-1, 1), k).to(w1.dtype)
            for i in range(i2 - i1):
                if m and i % m == 0:
                    scores = w1[i : i + m].square() / d[i : i + m].square().view(-1, 1)
                    lowest = torch.sort(scores, dim=0, stable=True).indices[:n]
                    prune[i : i + m].scatter_(0, lowest, 1.0)
                e = w1[i] * prune[i] / d[i]
                w1[i:].addr_(u1[i, i:], e, alpha=-1)
                err[i] = e
            w1.masked_fill_(prune.bool(), 0)  # pruned weights are ~0 after their own update; make them +0.0
            if i2 < cols:
                wt[i2:].addmm_(u[i1:i2, i2:].t(), err, alpha=-1)
    weight.copy_(wt.t().to(device=weight.device, dtype=weight.dtype))
    return weight


@register(
    "sparsegpt",
    description="""SparseGPT (Frantar & Alistarh, 2023) prunes each linear layer by approximate optimal brain
    surgery: with the Hessian H = 2XXᵀ of the layer's calibration inputs (fp32, dampened by 1 % of its mean
    diagonal), it chooses weights by w²/[H⁻¹]²_jj in blocks of 128 columns (or per N:M group) and updates the
    remaining weights to compensate the pruning error. Block by block, each block seeing the outputs of the
    already pruned blocks before it.""",
    needs_calibration=True,
)
def prune_sparsegpt(model, layers, request, done) -> dict:
    structure = request.nm

    def prune_layer(layer: PrunableMatrix, stats: Hessian, weight: torch.Tensor) -> None:
        sparsegpt_prune_(weight, sparsity=request.sparsity, n=structure.n, m=structure.m,
                         block_size=request.sparsegpt_block_size,
                         factor=stats.inverse_factor(request.sparsegpt_damp))

    timings = prune_sequentially(model, layers, request.calibration, stats_type=Hessian,
                                 prune_layer=prune_layer, done=done,
                                 activation_budget_bytes=request.activation_budget_bytes,
                                 moe_calibration=request.moe_calibration)
    return {**timings.as_dict(), **({"moe": timings.moe} if timings.moe else {})}
