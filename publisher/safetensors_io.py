"""Read and write safetensors one tensor at a time, with plain file reads and writes (no memory map).

Pruning a checkpoint touches every weight once. `safetensors.torch.save_file` needs every tensor of a file
in memory at once, and `safe_open` maps the file, so each page read stays in the process's resident set
until the file is closed: streaming a checkpoint through it shows the whole checkpoint in RSS. Here only
the tensor being read or written is in memory.

    >>> stored = read_index(Path("base/model.safetensors"))           # name → dtype, shape, byte range
    >>> with open("base/model.safetensors", "rb") as f:
    ...     w = read_tensor(f, stored["model.layers.0.mlp.up_proj.weight"])
    ...     rows = read_tensor(f, stored["model.layers.0.mlp.up_proj.weight"], rows=(0, 128))
    >>> shards = plan_shards(entries, max_shard_size="5GB")           # file name → entries, as save_pretrained
    >>> names = write_shards(folder, shards, produce=lambda entry: load_and_prune(entry.name))

Files written are laid out as `save_pretrained` lays them out: `model.safetensors`, or
`model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`.

Format (github.com/huggingface/safetensors): 8-byte little-endian header length, a JSON header of
name → {dtype, shape, data_offsets} (+ `__metadata__`), padded with spaces to a multiple of 8, then the
tensors' bytes back to back with no holes. Within a file tensors go in order of falling element size, so
every tensor starts at a multiple of its own element size (stable otherwise: the given order is kept).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

INDEX_FILE = "model.safetensors.index.json"
DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
TORCH_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class StoredTensor(TensorEntry):
    offset: int = 0  # where its bytes start in the file


def read_index(path: Path) -> dict[str, StoredTensor]:
    """The tensors of one safetensors file (header only): name → dtype, shape, byte offset."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    stored = {}
    for name, info in header.items():
        if info["dtype"] not in TORCH_DTYPES:
            raise ValueError(f"{path.name}: {name} has dtype {info['dtype']}, which this reader does not know")
        stored[name] = StoredTensor(name, TORCH_DTYPES[info["dtype"]], tuple(info["shape"]),
                                    8 + length + info["data_offsets"][0])
    return stored


def read_tensor(f: BinaryIO, stored: StoredTensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a tensor, or rows [start, stop) of its first dimension, from an open file into fresh memory."""
    shape, offset = stored.shape, stored.offset
    if rows is not None:
        row_bytes = math.prod(shape[1:]) * stored.dtype.itemsize
        start, stop = rows[0], min(rows[1], shape[0])
        shape, offset = (stop - start, *shape[1:]), offset + start * row_bytes
    tensor = torch.empty(shape, dtype=stored.dtype)
    if tensor.numel():
        f.seek(offset)
        buffer = memoryview(tensor.view(-1).view(torch.uint8).numpy())
        if f.readinto(buffer) != len(buffer):
            raise ValueError(f"{stored.name}: the file ends before the tensor's last byte")
    return tensor


def plan_shards(entries: list[TensorEntry], max_shard_size: int | str) -> dict[str, list[TensorEntry]]:
    """File name → its entries, split exactly as `save_pretrained` splits (huggingface_hub's splitter)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    by_name = {e.name: e for e in entries}
    shapes = {e.name: torch.empty(e.shape, dtype=e.dtype, device="meta") for e in entries}
    split = split_torch_state_dict_into_shards(shapes, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    return {file: [by_name[n] for n in names] for file, names in split.filename_to_tensors.items()}


def file_order(shard: list[TensorEntry]) -> list[TensorEntry]:
    """The order tensors are written in: falling element size (alignment), then as given."""
    return sorted(shard, key=lambda e: -e.dtype.itemsize)


def write_shards(folder: Path, shards: dict[str, list[TensorEntry]],
                 produce: Callable[[TensorEntry], torch.Tensor]) -> list[str]:
    """Write every shard, asking `produce` for each tensor in `file_order`; returns the file names written."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, shard in shards.items():
        _write_file(folder / name, shard, produce)
    if len(shards) == 1:
        return list(shards)
    weight_map = {e.name: name for name, shard in shards.items() for e in shard}
    total = sum(e.nbytes for shard in shards.values() for e in shard)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [*shards, INDEX_FILE]


def _write_file(path: Path, shard: list[TensorEntry], produce: Callable[[TensorEntry], torch.Tensor]) -> None:
    ordered = file_order(shard)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in ordered:
        header[entry.name] = {"dtype": DTYPE_CODES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for entry in ordered:
            tensor = produce(entry)
            if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                raise ValueError(f"{entry.name}: produced {tensor.dtype} {tuple(tensor.shape)}, planned "
                                 f"{entry.dtype} {entry.shape}")
            # The tensor's own memory, viewed as bytes: no serialised copy.
            f.write(memoryview(tensor.detach().cpu().contiguous().view(torch.uint8).numpy()))
