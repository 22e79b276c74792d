"""Where a model's weights live: one torch device, or a device map that accelerate fills in.

    >>> check_placement(device="cpu", device_map="auto", max_memory="0=70GiB,1=70GiB,cpu=200GiB")
    >>> from_pretrained_kwargs(settings, offload_dir=Path("run/.publish-pruned/offload"))
    {'device_map': 'auto', 'max_memory': {0: '70GiB', 1: '70GiB', 'cpu': '200GiB'}, 'offload_folder': '...'}

`--device-map` takes accelerate's strategies (`auto`, `balanced`, `balanced_low_0`, `sequential`) or a JSON
file mapping module names to devices (`{"model.layers.0": 0, "model.layers.40": "cpu", "lm_head": "disk"}`).
Blocks that do not fit on the accelerators go to CPU memory, then to disk (in the run folder's offload
directory, deleted after the stage); `prune/offload.py` reads and writes those offloaded weights, and
calibration inputs follow each block to its execution device (`prune/sequential.py`). Placement never
changes which weights are zeroed on a given device, so it is not part of a run's identity.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .errors import SettingsError

if TYPE_CHECKING:
    import torch
    from torch import nn

STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_NAMED_DEVICES = ("cpu", "disk", "mps")


class Placed(Protocol):
    """What placement reads of a run's settings (`settings.RunSettings` has it). A protocol, not an import:
    settings validates placement options with this module, so this module must not import settings."""

    @property
    def device_map(self) -> str | None: ...

    @property
    def device(self) -> str: ...

    @property
    def max_memory(self) -> str | None: ...


def parse_device_map(value: str) -> str | dict[str, int | str]:
    """An accelerate strategy name, or the module → device dict of a JSON file."""
    if value in STRATEGIES:
        return value
    path = Path(value).expanduser()
    if path.suffix != ".json":
        raise SettingsError(f"--device-map must be one of {', '.join(STRATEGIES)} or a .json file, got {value!r}")
    try:
        mapping = json.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"--device-map {path}: cannot read it ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--device-map {path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(mapping, dict) or not mapping:
        raise SettingsError(f"--device-map {path}: expected a JSON object of module name → device")
    for name, device in mapping.items():
        _check_device_entry(f"--device-map {path}: {name!r}", device)
    return mapping


def parse_max_memory(value: str | None) -> dict[int | str, str] | None:
    """`"0=70GiB,1=70GiB,cpu=200GiB"` → `{0: "70GiB", 1: "70GiB", "cpu": "200GiB"}` (None stays None)."""
    if not value:
        return None
    from accelerate.utils import convert_file_size_to_int

    budget: dict[int | str, str] = {}
    for item in value.split(","):
        device, sep, size = (part.strip() for part in item.partition("="))
        if not sep or not device or not size:
            raise SettingsError(f"--max-memory expects DEVICE=SIZE pairs separated by commas "
                                f"(e.g. 0=70GiB,cpu=200GiB), got {item.strip()!r}")
        key: int | str = int(device) if device.isdigit() else device
        _check_device_entry("--max-memory", key)
        try:
            convert_file_size_to_int(size)
        except ValueError:
            raise SettingsError(f"--max-memory: {size!r} is not a size (e.g. 70GiB, 500MB)") from None
        budget[key] = size
    return budget


def _check_device_entry(where: str, device: object) -> None:
    ok = (isinstance(device, int) and not isinstance(device, bool) and device >= 0) or device in _NAMED_DEVICES or (
        isinstance(device, str) and re.fullmatch(r"(cuda|xpu):[0-9]+", device) is not None)
    if not ok:
        raise SettingsError(f"{where}: {device!r} is not a device (a GPU index like 0, 'cuda:1', 'cpu', 'mps' "
                            "or 'disk')")


AUTO_DEVICE = "auto"


def resolve_device(device: str, device_map: str | None = None) -> str:
    """`--device auto`: the first CUDA GPU when one is present, else the CPU — never MPS, which stays untested and
    runs only when asked for. With a device map the map places every layer, so `auto` means no single device
    (`cpu`, as `--device` is then unused). Any other value is returned as given.

        >>> resolve_device("auto")      # on a machine with a GPU
        'cuda'
    """
    if device != AUTO_DEVICE:
        return device
    if device_map is not None:
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def device_notice(requested: str, settings: Placed) -> str:
    """The line every model-loading command prints before it starts, e.g.
    `device: cuda (NVIDIA H200), chosen by --device auto`."""
    from .environment import machine_description

    if settings.device_map is not None:
        return f"device: device map {settings.device_map!r} ({machine_description('cpu', gpus=True)})"
    how = ", chosen by --device auto" if requested == AUTO_DEVICE else ""
    return f"device: {settings.device} ({machine_description(settings.device)}){how}"


def check_placement(*, device: str, device_map: str | None, max_memory: str | None, model: str = "") -> None:
    """One-line errors for placement options that cannot work together (`model`: the --model value)."""
    if device_map and Path(model).suffix == ".gguf":
        raise SettingsError("--device-map needs a transformers folder or Hub model; a GGUF is dequantized on "
                            "one device (use --device)")
    if device_map is None:
        if max_memory:
            raise SettingsError("--max-memory needs --device-map (it bounds what accelerate puts on each device)")
        return
    if device != "cpu":
        raise SettingsError("pass either --device or --device-map, not both (the device map places every layer)")
    parse_device_map(device_map)
    parse_max_memory(max_memory)


def check_devices_present(settings: Placed) -> None:
    """Every device a device map or memory budget names exists here (checked when a run starts, not when a
    manifest is read: a release grid may be previewed on a machine without its GPUs)."""
    if settings.device_map is None:
        return
    mapping = parse_device_map(settings.device_map)
    named = [*(mapping.values() if isinstance(mapping, dict) else []), *(parse_max_memory(settings.max_memory) or {})]
    for entry in named:
        _check_available(entry)


def _check_available(device: int | str) -> None:
    import torch

    kind, _, index = (f"cuda:{device}" if isinstance(device, int) else device).partition(":")
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None)}.get(kind)
    if kind in ("cuda", "xpu"):
        count = backend.device_count() if backend is not None and backend.is_available() else 0
        if int(index) >= count:
            raise SettingsError(f"device {device!r} is named for placement but this machine has "
                                f"{count or 'no'} {kind.upper()} device{'s' if count != 1 else ''}")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise SettingsError("device 'mps' is named for placement but MPS is not available")


def from_pretrained_kwargs(settings: Placed, offload_dir: Path | None) -> dict:
    """Extra `from_pretrained` arguments for a device map; empty when the model goes to one device."""
    if settings.device_map is None:
        return {}
    if offload_dir is None:
        raise SettingsError("--device-map needs an offload folder (internal: none was given)")
    kwargs = {"device_map": parse_device_map(settings.device_map), "offload_folder": str(offload_dir)}
    budget = parse_max_memory(settings.max_memory)
    if budget:
        kwargs["max_memory"] = budget
    return kwargs


def check_map_fits(model: nn.Module, mapping: dict[str, int | str]) -> None:
    """Every name in a JSON device map is a module of `model`, and every weight is placed by one of them.

    accelerate would silently ignore an unknown name and put unplaced modules on the CPU; a meta-device
    skeleton of the model is enough to check, before any weight is read.
    """
    if "" in mapping and len(mapping) > 1:  # accelerate would place everything by "" and ignore the rest
        raise SettingsError('--device-map: "" (the whole model) must be the only entry when present')
    modules = dict(model.named_modules())
    unknown = next((name for name in mapping if name and name not in modules), None)
    if unknown is not None:
        raise SettingsError(f"--device-map names {unknown!r}, which is not a module of {type(model).__name__} "
                            f"(its top-level modules: {', '.join(n for n, _ in model.named_children())})")
    placed = tuple(f"{name}." for name in mapping if name)
    loose = next((n for n, _ in model.named_parameters() if placed and not (n + ".").startswith(placed)), None)
    if loose is not None:
        raise SettingsError(f"--device-map places no module holding {loose}: name every top-level module")


def describe_placement(model: nn.Module) -> str:
    """`"cpu"`, or how many modules each device holds, e.g. `"0: 21, 1: 20, cpu: 2, disk: 1"`."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return str(next(model.parameters()).device)
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[str(device)] = counts.get(str(device), 0) + 1
    return ", ".join(f"{device}: {n}" for device, n in counts.items())


def input_device(model: nn.Module) -> torch.device:
    """Where input ids go: the device the input embeddings run on (their weights may be offloaded)."""
    from .prune.offload import execution_device

    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    return execution_device(embeddings if embeddings is not None else model)

