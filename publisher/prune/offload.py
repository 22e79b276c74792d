"""Weights that accelerate offloaded (a device map with "cpu" or "disk" entries): read, edit, write back.

With `--device-map`, blocks that do not fit on the accelerators keep their weights elsewhere: the
parameter is on the "meta" device and the real tensor sits in the accelerate hook's `weights_map` — a CPU
state dict, or safetensors files on disk (possibly the base model's own files, which must never be
written). The hook brings weights to its execution device for each forward and drops them after. Pruning
edits weights, so every method reaches them through `editable_weight`:

    >>> with editable_weight(model, layer) as weight:   # a real tensor on the layer's execution device
    ...     zero_smallest_magnitude_(weight, k)
    # on a clean exit the edit is stored: a CPU state-dict entry is replaced; a disk weight goes to a new
    # safetensors file in the offload folder and the loader's index points at it. On an exception, nothing.

For weights in memory (no device map, or a layer placed on a GPU) it yields `module.weight.data` itself.
`save_pretrained` reads offloaded weights through the same `weights_map`, so it saves the pruned values.
An expert matrix (`experts.ExpertMatrix`) is a view into its 3-D parameter: in memory the view itself; offloaded,
the whole parameter is loaded, the view edited and the parameter stored back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, MutableMapping
from pathlib import Path

import torch
from torch import nn

from ..errors import SettingsError
from .scope import PrunableMatrix


def _align_hook(module: nn.Module):
    """The module's accelerate AlignDevicesHook (directly or inside a SequentialHook), or None."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return None
    hooks = getattr(hook, "hooks", (hook,))  # a SequentialHook holds several
    aligning = [h for h in hooks if hasattr(h, "execution_device") and hasattr(h, "weights_map")]
    return next((h for h in aligning if h.offload), aligning[0] if aligning else None)


def execution_device(module: nn.Module) -> torch.device:
    """Where `module` computes: its accelerate hook's execution device, else its first weight's device."""
    for sub in module.modules():
        hook = _align_hook(sub)
        if hook is not None and hook.execution_device is not None:
            return torch.device(hook.execution_device)
        param = next(sub.parameters(recurse=False), None)
        if param is not None and param.device.type != "meta":
            return param.device
    if next(module.parameters(), None) is None:
        return torch.device("cpu")
    raise SettingsError(f"{type(module).__name__} has weights on the meta device and no accelerate hook to load "
                        "them: the model was not fully loaded")


def _offloaded(model: nn.Module, name: str, param: str = "weight") -> tuple[object, str] | None:
    """(hook, key in its weights_map) for parameter `param` of module `name` if accelerate offloaded it, else None."""
    parts = name.split(".")
    for cut in range(len(parts), -1, -1):
        owner = ".".join(parts[:cut])
        hook = _align_hook(model.get_submodule(owner))
        if hook is None or not hook.offload:
            continue
        if cut == len(parts):
            return hook, param
        if hook.place_submodules:  # the hook manages every parameter below its module
            return hook, ".".join([*parts[cut:], param])
    return None


@contextlib.contextmanager
def editable_weight(model: nn.Module, layer: PrunableMatrix) -> Iterator[torch.Tensor]:
    """The layer's weight as a real tensor to edit in place; offloaded weights are stored back on exit."""
    found = _offloaded(model, layer.module_name, layer.param)
    if found is None:
        yield layer.matrix(getattr(layer.module, layer.param).data)
        return
    hook, key = found
    # A copy of our own: the stored tensor may map the base model's files.
    weight = hook.weights_map[key].to(torch.device(hook.execution_device), copy=True)
    yield layer.matrix(weight)
    _store(hook.weights_map, key, weight)


def read_weight(model: nn.Module, layer: PrunableMatrix) -> torch.Tensor:
    """The layer's current weight values (loaded from the offload store when needed), for counting."""
    return layer.matrix(read_param(model, layer.module_name, layer.param))


def read_param(model: nn.Module, module_name: str, param: str) -> torch.Tensor:
    """A parameter's current values, from the offload store when accelerate offloaded it."""
    found = _offloaded(model, module_name, param)
    if found is None:
        return getattr(model.get_submodule(module_name), param).data
    hook, key = found
    return hook.weights_map[key]


def _store(weights_map, key: str, weight: torch.Tensor) -> None:
    """Replace an offloaded weight: in the CPU state dict, or as a new file in the offload folder."""
    from accelerate.utils import OffloadedWeightsLoader
    from safetensors.torch import save_file

    dataset, full_key = getattr(weights_map, "dataset", weights_map), getattr(weights_map, "prefix", "") + key
    value = weight.detach().to("cpu").contiguous()
    if isinstance(dataset, OffloadedWeightsLoader):
        if full_key in dataset.state_dict:
            dataset.state_dict[full_key] = value
            return
        if dataset.save_folder is None:
            raise SettingsError(f"{full_key} is offloaded to disk but accelerate has no offload folder to write to")
        path = Path(dataset.save_folder) / f"{full_key}.safetensors"  # never the base model's own file
        save_file({full_key: value}, str(path))
        dataset.index[full_key] = {"safetensors_file": str(path), "weight_name": full_key,
                                   "dtype": str(value.dtype).removeprefix("torch.")}
    elif isinstance(dataset, MutableMapping):  # accelerate.cpu_offload's plain state dict
        dataset[full_key] = value
    else:
        raise SettingsError(f"cannot write back offloaded weight {full_key} ({type(dataset).__name__} store)")
