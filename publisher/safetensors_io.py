"""Read and write safetensors one tensor at a time, with plain file reads and writes (no memory map).

Pruning a checkpoint touches every weight once. `safetensors.torch.save_file` needs every tensor of a file
in memory at once, and `safe_open` maps the file, so each page read stays in the process's resident set
until the file is closed: streaming a checkpoint through it shows the whole checkpoint in RSS. Here only
the tensor being read or written is in memory.

    >>> with SafetensorsFile(Path("base/model.safetensors")) as f:   # reads the header only
    ...     f.tensors["model.layers.0.mlp.up_proj.weight"].shape
    ...     w = f.read("model.layers.0.mlp.up_proj.weight")
    ...     rows = f.read("model.layers.0.mlp.up_proj.weight", rows=(0, 128))
    >>> shards = plan_shards(entries, max_shard_size="5GB")           # file name → entries, as save_pretrained
    >>> names = write_shards(folder, shards, produce=lambda entry: load_and_prune(entry.name))

Files written are laid out as `save_pretrained` lays them out: `model.safetensors`, or
`model-0000i-of-0000n.safetensors` shards plus `model.safetensors.index.json`.

Format (github.com/huggingface/safetensors): 8-byte little-endian header length, a JSON header of
name → {dtype, shape, data_offsets} (+ `__metadata__`), padded with spaces to a multiple of 8, then the
tensors' bytes back to back with no holes, in the safetensors library's order (dtype, widest first, then
name): the files are byte for byte what `save_pretrained` writes.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

INDEX_FILE = "model.safetensors.index.json"
DTYPE_CODES = {
    torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.uint64: "U64", torch.uint32: "U32", torch.uint16: "U16", torch.complex64: "C64",
    torch.bool: "BOOL", torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
TORCH_DTYPES = {code: dtype for dtype, code in DTYPE_CODES.items()}
# The order the safetensors library writes dtypes in (then names, as strings): byte-identical files.
_FILE_ORDER = {code: rank for rank, code in enumerate(
    ("U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16", "F8_E4M3", "F8_E5M2", "I8", "U8",
     "BOOL"))}
_MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit


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


class SafetensorsError(ValueError):
    """A file that is not a readable safetensors file (truncated, a Git LFS pointer, an unknown dtype)."""


def read_index(path: Path) -> dict[str, StoredTensor]:
    """The tensors of one safetensors file (header only): name → dtype, shape, byte offset.

    Raises `SafetensorsError` unless the header is well formed and every tensor lies inside the file.
    """
    _check_byte_order()
    size = path.stat().st_size
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8).ljust(8, b"\0"))
        if size < 8 or length > min(_MAX_HEADER, size - 8):
            raise SafetensorsError(f"{path.name} is not a safetensors file (a Git LFS pointer or truncated?)")
        try:
            header = json.loads(f.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise SafetensorsError(f"{path.name}: its safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path.name}: its safetensors header is not a JSON object")
    header.pop("__metadata__", None)
    stored = {}
    for name, info in header.items():
        tensor = _stored_tensor(name, info, 8 + length)
        if tensor is None:
            raise SafetensorsError(f"{path.name}: the header entry of {name} is malformed")
        if tensor.offset + tensor.nbytes > size:
            raise SafetensorsError(f"{path.name}: {name}'s bytes lie past the file's end")
        stored[name] = tensor
    return stored


def _stored_tensor(name: str, info: object, data_start: int) -> StoredTensor | None:
    """A header entry as a StoredTensor, or None unless its dtype, shape and offsets are consistent."""
    if not isinstance(info, dict):
        return None
    code, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if (code not in TORCH_DTYPES or not isinstance(shape, list) or not isinstance(offsets, list)
            or len(offsets) != 2 or not all(isinstance(x, int) and x >= 0 for x in [*shape, *offsets])):
        return None
    tensor = StoredTensor(name, TORCH_DTYPES[code], tuple(shape), data_start + offsets[0])
    return tensor if offsets[1] - offsets[0] == tensor.nbytes else None


def read_tensor(f: BinaryIO, stored: StoredTensor, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a tensor, or rows [start, stop) of its first dimension, from an open file into fresh memory."""
    shape, offset = stored.shape, stored.offset
    if rows is not None and shape:
        row_bytes = math.prod(shape[1:]) * stored.dtype.itemsize
        start, stop = rows[0], min(rows[1], shape[0])
        shape, offset = (stop - start, *shape[1:]), offset + start * row_bytes
    tensor = torch.empty(shape, dtype=stored.dtype)
    if tensor.numel():
        f.seek(offset)
        buffer = memoryview(tensor.reshape(-1).view(torch.uint8).numpy())
        if f.readinto(buffer) != len(buffer):
            raise SafetensorsError(f"{stored.name}: the file ends before the tensor's last byte")
    return tensor


class SafetensorsFile:
    """One safetensors file open for plain reads: `tensors` (name → StoredTensor) and `read(name, rows)`."""

    def __init__(self, path: Path):
        self.path = path
        self.tensors = read_index(path)
        self._handle = open(path, "rb")  # noqa: SIM115 - closed by close() / the context manager

    def read(self, name: str, rows: tuple[int, int] | None = None) -> torch.Tensor:
        return read_tensor(self._handle, self.tensors[name], rows)

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plan_shards(entries: list[TensorEntry], max_shard_size: int | str) -> dict[str, list[TensorEntry]]:
    """File name → its entries, split exactly as `save_pretrained` splits (huggingface_hub's splitter)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    by_name = {e.name: e for e in entries}
    shapes = {e.name: torch.empty(e.shape, dtype=e.dtype, device="meta") for e in entries}
    split = split_torch_state_dict_into_shards(shapes, filename_pattern="model{suffix}.safetensors",
                                               max_shard_size=max_shard_size)
    return {file: [by_name[n] for n in names] for file, names in split.filename_to_tensors.items()}


def file_order(shard: list[TensorEntry]) -> list[TensorEntry]:
    """The order the safetensors library writes tensors in: by dtype (widest first), then by name."""
    return sorted(shard, key=lambda e: (_FILE_ORDER[DTYPE_CODES[e.dtype]], e.name))


def write_shards(folder: Path, shards: dict[str, list[TensorEntry]],
                 produce: Callable[[TensorEntry], torch.Tensor]) -> list[str]:
    """Write every shard, asking `produce` for each tensor in `file_order`; returns the file names written.

    `produce` runs on one worker thread, one tensor ahead of the writes (so at most two tensors are in
    memory), and is called in order: it may keep state.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name, shard in shards.items():
        _write_file(folder / name, shard, produce)
    if len(shards) == 1:
        return list(shards)
    weight_map = {e.name: name for name, shard in shards.items() for e in shard}
    entries = [e for shard in shards.values() for e in shard]
    metadata = {"total_parameters": sum(math.prod(e.shape) for e in entries),
                "total_size": sum(e.nbytes for e in entries)}
    index = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return [*shards, INDEX_FILE]


def _check_byte_order() -> None:
    if sys.byteorder != "little":  # safetensors stores little-endian; these readers and writers copy raw bytes
        raise SafetensorsError("reading and writing safetensors needs a little-endian machine")


def _write_file(path: Path, shard: list[TensorEntry], produce: Callable[[TensorEntry], torch.Tensor]) -> None:
    _check_byte_order()
    ordered = file_order(shard)
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for entry in ordered:
        header[entry.name] = {"dtype": DTYPE_CODES[entry.dtype], "shape": list(entry.shape),
                              "data_offsets": [offset, offset + entry.nbytes]}
        offset += entry.nbytes
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()  # raw UTF-8, as the library
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned
    with open(path, "wb") as f, ThreadPoolExecutor(1, thread_name_prefix="produce") as ahead:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        # The next tensor is produced (read, pruned) while this one is written: one tensor ahead, in order.
        upcoming = [ahead.submit(produce, ordered[0])] if ordered else []
        for i, entry in enumerate(ordered):
            tensor = upcoming.pop().result()
            if i + 1 < len(ordered):
                upcoming.append(ahead.submit(produce, ordered[i + 1]))
            if tensor.dtype != entry.dtype or tuple(tensor.shape) != entry.shape:
                raise ValueError(f"{entry.name}: produced {tensor.dtype} {tuple(tensor.shape)}, planned "
                                 f"{entry.dtype} {entry.shape}")
            # The tensor's own memory, viewed as bytes: no serialised copy.
            f.write(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))


def checkpoint_parameters(folder: Path) -> int:
    """Parameters stored in a folder's `model*.safetensors` (headers only, no weight read); 0 without any readable
    one (whoever loads the weights next says what is wrong with them)."""
    total = 0
    for path in sorted(Path(folder).glob("model*.safetensors")):
        try:
            total += sum(math.prod(stored.shape) for stored in read_index(path).values())
        except (SafetensorsError, OSError):
            return 0
    return total
