"""N:M sparsity: N zeros in every group of M consecutive inputs of each row of a weight matrix.

Groups run along the input dimension (a row of `nn.Linear.weight` is one output, its columns the inputs),
as NVIDIA's 2:4 sparse tensor cores expect: row r, columns [g·M, (g+1)·M).

    >>> mask = nm_mask(weight.abs(), n=2, m=4)          # True = prune: the 2 lowest scores of each group of 4
    >>> zero_nm_smallest_(weight, 2, 4)                  # magnitude 2:4 in place, row slice by row slice
    >>> nm_violations(weight, 2, 4)                      # groups with fewer than 2 zeros
    0
    >>> checkpoint_nm_violations(Path("runs/x"), names, Structure(2, 4))   # on the saved files, streamed
    {'model.layers.0.self_attn.q_proj.weight': 0, ...}

Ties inside a group are broken by position (the first ones are pruned), so a mask is reproducible.
Everything works on row slices, so a caller can stream a large matrix (or a safetensors slice) through it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .structure import Structure

ROW_CHUNK_ELEMENTS = 1 << 22  # entries per row slice: temporaries (fp32 scores, sort indices) stay ~50 MB


def rows_per_chunk(row_length: int, elements: int = ROW_CHUNK_ELEMENTS) -> int:
    """How many rows of `row_length` entries make one slice of about `elements` entries (at least one)."""
    return max(1, elements // max(1, row_length))


def check_groups(in_features: int, m: int, what: str = "matrix") -> None:
    if m <= 0 or in_features % m:
        raise ValueError(f"{what}: {in_features} inputs do not split into groups of {m}")


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Bool mask shaped like `scores` (rows × inputs), True on the n lowest scores of each group of m inputs.

    Ties are broken by position (stable sort). Scores may be any real dtype; they are not modified.
    """
    rows, cols = scores.shape
    check_groups(cols, m, "scores")
    groups = scores.reshape(rows, cols // m, m)
    lowest = torch.sort(groups, dim=-1, stable=True).indices[..., :n]
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    return mask.scatter_(-1, lowest, True).view(rows, cols)


def zero_nm_smallest_(weight: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Magnitude N:M in place: zero the n smallest |w| of every group of m inputs in each row; returns `weight`."""
    rows, cols = weight.shape
    check_groups(cols, m, "weight")
    step = rows_per_chunk(cols)
    for start in range(0, rows, step):
        part = weight[start : start + step]
        part.masked_fill_(nm_mask(part.abs(), n, m), 0)
    return weight


def nm_violations(tensor: torch.Tensor, n: int, m: int) -> int:
    """Number of groups of m consecutive inputs (per row) holding fewer than n zeros; 0 means N:M-compliant.

    Works on any row slice of a matrix, so counts can be summed slice by slice. A 1-D tensor is one row.
    """
    rows = tensor.reshape(1, -1) if tensor.dim() == 1 else tensor.reshape(tensor.shape[0], -1)
    check_groups(rows.shape[1], m, "tensor")
    zeros = (rows.reshape(rows.shape[0], -1, m) == 0).sum(-1)
    return int((zeros < n).sum())


def checkpoint_nm_violations(folder: Path, weight_names: list[str], structure: Structure) -> dict[str, int]:
    """N:M violations of each named tensor in the saved safetensors at `folder`, streamed by row slices.

    The lead's sparsity stage can call this next to `measure_checkpoint`; any non-zero count means the
    published weights are not `structure`-sparse. Unstructured → every count is 0 (nothing to check).
    """
    from ..safetensors_io import SafetensorsFile
    from .sparsity import weight_locations

    if structure.unstructured:
        return dict.fromkeys(weight_names, 0)
    locations = weight_locations(folder)
    found: dict[str, int] = {}
    for file_name in sorted({locations[name] for name in weight_names}):
        with SafetensorsFile(folder / file_name) as file:
            for name in (x for x in weight_names if locations[x] == file_name):
                shape = file.tensors[name].shape
                if len(shape) != 2:  # not a weight matrix: one row
                    found[name] = nm_violations(file.read(name), structure.n, structure.m)
                    continue
                step = rows_per_chunk(shape[1], 1 << 24)
                found[name] = sum(nm_violations(file.read(name, rows=(start, start + step)), structure.n, structure.m)
                                  for start in range(0, shape[0], step))
    return {name: found[name] for name in weight_names}
