"""Sparsity counted from the saved safetensors, streaming one slice at a time.

What the card reports is what was published, not what the in-memory model held.

    >>> record = measure_checkpoint(Path("runs/x"), ["model.layers.0.mlp.up_proj.weight", ...])
    >>> record.actual_sparsity
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from ..errors import OutputDirError
from ..results import LayerSparsity, SparsityRecord
from ..safetensors_io import SafetensorsFile, read_index
from .moe_sparsity import moe_summary

CHUNK_ELEMENTS = 1 << 24  # ~64 MB of fp32 per slice: memory stays flat whatever the matrix size


def weight_locations(folder: Path) -> dict[str, str]:
    """Tensor name → safetensors file name, from the index when sharded."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    locations = {}
    for path in sorted(folder.glob("*.safetensors")):
        locations.update(dict.fromkeys(read_index(path), path.name))
    return locations


def zeros_in(tensor: torch.Tensor) -> int:
    """How many entries equal zero (±0; NaN is not zero) — `int((tensor == 0).sum())`, ~5× faster on CPU.

    Summing a bool tensor widens every flag to int64. Here the flags (one byte each) are read eight at a
    time as int64 and summed in groups of 128: each byte lane then holds at most 128, so no lane carries
    into the next, and the lanes are added up as bytes at the end.
    """
    flags = torch.eq(tensor.reshape(-1), 0)
    packed_end = flags.numel() // 1024 * 1024
    packed = flags[:packed_end].view(torch.int64).view(-1, 128).sum(1)
    return int(packed.view(torch.uint8).sum(dtype=torch.int64)) + int(flags[packed_end:].sum())


def count_zeros(file: SafetensorsFile, name: str) -> LayerSparsity:
    """Zeros of one stored tensor, read in slices of rows (plain reads: the file is never mapped)."""
    shape = file.tensors[name].shape
    rows = shape[0] if shape else 1
    step = max(1, CHUNK_ELEMENTS // max(1, math.prod(shape[1:])))
    zeros = sum(zeros_in(file.read(name, rows=(start, start + step))) for start in range(0, rows, step))
    return LayerSparsity(name, list(shape), math.prod(shape), zeros)


def measure_checkpoint(folder: Path, weight_names: list[str]) -> SparsityRecord:
    """Count zeros of `weight_names` in the checkpoint at `folder`; every name must be present."""
    locations = weight_locations(folder)
    missing = [n for n in weight_names if n not in locations]
    if missing:
        raise OutputDirError(f"saved checkpoint in {folder} lacks {len(missing)} pruned tensors, e.g. {missing[0]}")
    by_file: dict[str, list[str]] = {}
    for name in weight_names:
        by_file.setdefault(locations[name], []).append(name)
    counted: dict[str, LayerSparsity] = {}
    for file_name, names in by_file.items():
        with SafetensorsFile(folder / file_name) as file:
            for name in names:
                counted[name] = count_zeros(file, name)
    layers = [counted[n] for n in weight_names]
    return SparsityRecord(
        measured_from="saved safetensors (streamed)",
        prunable_params=sum(x.params for x in layers),
        zero_params=sum(x.zeros for x in layers),
        layers=layers,
        moe=moe_summary(layers),  # by kind, per expert and per layer; None for a dense model
    )
