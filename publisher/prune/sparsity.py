"""Sparsity counted from the saved safetensors, streaming one slice at a time.

What the card reports is what was published, not what the in-memory model held.

    >>> record = measure_checkpoint(Path("runs/x"), ["model.layers.0.mlp.up_proj.weight", ...])
    >>> record.actual_sparsity
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from safetensors import safe_open

from ..errors import OutputDirError
from ..results import LayerSparsity, SparsityRecord

CHUNK_ELEMENTS = 1 << 24  # ~64 MB of fp32 per slice: memory stays flat whatever the matrix size


def weight_locations(folder: Path) -> dict[str, str]:
    """Tensor name → safetensors file name, from the index when sharded."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        return json.loads(index.read_text())["weight_map"]
    files = sorted(p.name for p in folder.glob("*.safetensors"))
    locations = {}
    for name in files:
        with safe_open(folder / name, framework="pt") as f:
            locations.update(dict.fromkeys(f.keys(), name))
    return locations


def count_zeros(handle, name: str) -> LayerSparsity:
    view = handle.get_slice(name)
    shape = view.get_shape()
    rows = shape[0] if shape else 1
    row_elems = max(1, math.prod(shape[1:]))
    step = max(1, CHUNK_ELEMENTS // row_elems)
    zeros = 0
    for start in range(0, rows, step):
        zeros += int((view[start : start + step] == 0).sum())
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
        with safe_open(folder / file_name, framework="pt") as handle:
            for name in names:
                counted[name] = count_zeros(handle, name)
    layers = [counted[n] for n in weight_names]
    return SparsityRecord(
        measured_from="saved safetensors (streamed)",
        prunable_params=sum(x.params for x in layers),
        zero_params=sum(x.zeros for x in layers),
        layers=layers,
    )
