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


def machine_description(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(torch.device(device))} ({platform.system()})"
    import os

    return f"{cpu_model()}, {os.cpu_count()} cores ({platform.system()} {platform.machine()})"


def tool_info() -> dict[str, str | None]:
    """The tool's version and, when run from a git checkout, its commit."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"name": "publish-pruned", "version": __version__, "git_commit": commit}


def environment(device: str) -> dict:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": machine_description(device),
        "libraries": library_versions(),
    }
