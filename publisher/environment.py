"""What the run ran on: library versions, machine, and the tool's own git commit."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from . import __version__

LIBRARIES = ("torch", "transformers", "safetensors", "huggingface_hub", "accelerate", "jinja2")


def library_versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def cpu_model() -> str:
    """The CPU's marketing name (macOS: sysctl; Linux: /proc/cpuinfo), else what `platform` knows."""
    if platform.system() == "Darwin":
        try:
            done = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True,
                                  timeout=5, check=False)
            if done.stdout.strip():
                return done.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: str, *, gpus: bool = False) -> str:
    """The CPU, or the GPU of `device`; with `gpus` (a device map), every visible GPU and the CPU."""
    import os

    import torch

    cpu = f"{cpu_model()}, {os.cpu_count()} cores ({platform.system()} {platform.machine()})"
    if gpus and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        listed = f"{len(names)} × {names[0]}" if len(set(names)) == 1 else ", ".join(names)
        return f"{listed}; {cpu}"
    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({platform.system()})"
    return cpu


def tool_info() -> dict[str, str | None]:
    """The tool's version and, when run from a git checkout, its commit."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"name": "publish-pruned", "version": __version__, "git_commit": commit}


def environment(device: str, *, gpus: bool = False) -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine_description(device, gpus=gpus),
        "libraries": library_versions(),
    }
