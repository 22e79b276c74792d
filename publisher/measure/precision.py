"""The numeric precision SRS decodes in: float32 where the device has room, so a reply does not depend on its batch.

    >>> with decoding_precision(model, "float32") as decoding:   # bfloat16 weights upcast in place, restored after
    ...     replies = sample_continuations(model, ...)
    >>> decoding.dtype, decoding.upcast_from, decoding.batch_invariant
    ('float32', 'bfloat16', True)

Why: in bfloat16 the padding a batch adds changes the kernels' accumulation order enough to flip sampled tokens
(7 of 60 SmolLM2 replies changed between batch 1 and 8 on the CPU); in float32 they agree at every batch size tested
on the CPU (tests/test_srs.py). On a GPU, cuBLAS picks kernels by shape: bench/gpu_check.py compares batch 1 with
the automatic size there.
bfloat16 and float16 values are exactly representable in float32, so the upcast evaluates the same weights and the
restore gives back the very same tensors' values. Where the upcast cannot run — a model spread by a device map,
MPS (untested), too little free memory, or free memory unknown — decoding stays in the model's dtype and
`Decoding.reason` says why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = ("float32", "native")
_LOW = (torch.bfloat16, torch.float16)
_HEADROOM = 1.25  # free memory wanted per byte the upcast adds, for activations and allocator slack


@dataclass
class Decoding:
    dtype: str  # what the forward passes ran in
    upcast_from: str | None  # the weights' own dtype when they were upcast for decoding
    batch_invariant: bool  # float32: a reply does not depend on the other prompts of its batch
    reason: str | None = None  # why a requested float32 upcast did not happen


def free_bytes(device: torch.device) -> int | None:
    """Memory free on `device` now (CUDA: the driver's reading plus what PyTorch holds reserved but unused, e.g. a
    model deleted a moment ago; CPU: MemAvailable); None where unknown."""
    if device.type == "cuda":
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return torch.cuda.mem_get_info(device)[0] + max(0, cached)
    if device.type == "cpu":
        meminfo = Path("/proc/meminfo")
        if meminfo.is_file():
            for line in meminfo.read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        with contextlib.suppress(ValueError, OSError, AttributeError):
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return None


@dataclass
class _Slot:
    """One bfloat16/float16 tensor and every (module, name) that holds it: tied weights and shared buffers are
    cast once and put back in every place, so they stay one tensor."""

    is_param: bool
    dtype: torch.dtype
    places: list[tuple[torch.nn.Module, str]]

    @property
    def numel(self) -> int:
        module, name = self.places[0]
        return (module._parameters if self.is_param else module._buffers)[name].numel()


def _low_precision_tensors(model: torch.nn.Module) -> list[_Slot]:
    found: dict[int, _Slot] = {}
    for module in model.modules():
        for is_param, table in ((True, module._parameters), (False, module._buffers)):
            for name, tensor in table.items():
                if tensor is None or tensor.dtype not in _LOW:
                    continue
                slot = found.setdefault(id(tensor), _Slot(is_param, tensor.dtype, []))
                slot.places.append((module, name))
    return list(found.values())


def _refusal(model: torch.nn.Module, tensors: list, device: torch.device) -> str | None:
    placement = set(getattr(model, "hf_device_map", None) and model.hf_device_map.values() or ())
    if len(placement) > 1 or placement & {"disk", "meta"}:
        return "the model is spread by a device map"
    if any(t.device.type == "meta" for t in model.parameters()):
        return "some weights are offloaded"
    if device.type not in ("cpu", "cuda"):
        return f"{device.type} is untested"
    extra = sum(slot.numel * 2 for slot in tensors)  # 4 bytes instead of 2 per value
    free = free_bytes(device)
    if free is None:
        return f"free memory on {device.type} is unknown"
    if free < extra * _HEADROOM:
        return f"float32 needs {extra / 2**30:.1f} GiB more than the {free / 2**30:.1f} GiB free on {device.type}"
    return None


@contextlib.contextmanager
def decoding_precision(model: torch.nn.Module, precision: str = "float32") -> Iterator[Decoding]:
    """Run the block with the model's bfloat16/float16 tensors upcast to float32 (`precision="float32"`, where the
    device allows) or as they are (`"native"`); the original dtypes are restored on exit, error or not."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    tensors = _low_precision_tensors(model)
    native = str(next(model.parameters()).dtype).removeprefix("torch.")
    if not tensors:
        yield Decoding(dtype=native, upcast_from=None, batch_invariant=native == "float32")
        return
    if precision == "native":
        yield Decoding(dtype=native, upcast_from=None, batch_invariant=False)
        return
    device = next(model.parameters()).device
    reason = _refusal(model, tensors, device)
    if reason is not None:
        yield Decoding(dtype=native, upcast_from=None, batch_invariant=False, reason=reason)
        return
    try:
        for slot in tensors:
            _cast(slot, torch.float32)
        yield Decoding(dtype="float32", upcast_from=native, batch_invariant=True)
    finally:
        for slot in tensors:
            _cast(slot, slot.dtype)


def _cast(slot: _Slot, dtype: torch.dtype) -> None:
    module, name = slot.places[0]
    if slot.is_param:  # the Parameter object stays (tied weights keep sharing it); only its data changes
        module._parameters[name].data = module._parameters[name].data.to(dtype)
        return
    cast = module._buffers[name].to(dtype)
    for module, name in slot.places:
        module._buffers[name] = cast
