"""Files of the base model that travel with the pruned checkpoint: license terms, chat templates, model code.

    >>> snapshot_download(repo, ignore_patterns=hub_ignore_patterns(trust_pickled=False))
    >>> copied = copy_base_files(Path("base"), Path("staging"))   # ["LICENSE", "USE_POLICY.md", ...]
    >>> license_files(copied)                                      # ["LICENSE", "USE_POLICY.md"]

Downloading a Hub base model takes everything but weights transformers does not read (an ignore list, not
an allow list): a model whose chat template lives only in `chat_template.jinja`, or whose code is in `*.py`
(`--trust-remote-code`), loads from the snapshot as it does from the Hub. Saving writes config, weights and
tokenizer; `copy_base_files` then adds what saving leaves out. Gemma's and Llama's terms require
redistributors to pass the agreement on, so license-like files (`LICENSE_PATTERNS`) are always copied.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Never fetched from the Hub: weights for other runtimes or frameworks, and Meta's/Mistral's own-format copies
# (`original/`, `consolidated*.safetensors`), which transformers does not read and which double the download.
HUB_IGNORE_PATTERNS = (
    "*.gguf", "*.onnx", "*.onnx_data", "*.ort", "*.msgpack", "*.h5", "*.tflite", "*.ot", "*.mlmodel",
    "*.mlpackage/*", "*.nemo", "original/*", "consolidated*.safetensors",
)
# License terms to pass on, matched case-insensitively against file names at the top of the base folder.
LICENSE_PATTERNS = (
    "license", "license[._-]*", "licence", "licence[._-]*", "copying", "copying.*", "notice", "notice.*",
    "use_policy*", "*acceptable_use_policy*", "terms_of_use*",
)
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
CHAT_TEMPLATE_DIR = "additional_chat_templates"


def hub_ignore_patterns(*, trust_pickled: bool) -> list[str]:
    """`snapshot_download(ignore_patterns=...)`: pickles (`*.bin` only with `trust_pickled`, as transformers
    loads nothing else), other formats' weights and own-format copies."""
    pickles = [f"*{suffix}" for suffix in PICKLE_SUFFIXES if not (trust_pickled and suffix == ".bin")]
    return [*pickles, *HUB_IGNORE_PATTERNS]


def is_license_file(name: str) -> bool:
    """Whether a top-level file name looks like license terms (`LICENSE.txt`, `NOTICE`, `USE_POLICY.md`...)."""
    return "/" not in name and any(fnmatch.fnmatchcase(name.lower(), pattern) for pattern in LICENSE_PATTERNS)


def license_files(names: list[str]) -> list[str]:
    return sorted(name for name in names if is_license_file(name))


def list_files(folder: Path) -> list[str]:
    """Every file under `folder`, as sorted paths relative to it (`additional_chat_templates/x.jinja`)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def base_extras(base: Path) -> list[str]:
    """Files of `base` to publish besides what saving writes: license terms, chat templates, and the model's
    code when its config names some (`auto_map`); relative paths, sorted."""
    names = [p.name for p in base.iterdir() if p.is_file()] if base.is_dir() else []
    extras = [n for n in names if is_license_file(n) or n in CHAT_TEMPLATE_FILES]
    templates = base / CHAT_TEMPLATE_DIR
    if templates.is_dir():
        extras += [f"{CHAT_TEMPLATE_DIR}/{p.name}" for p in templates.iterdir() if p.is_file()]
    if _has_remote_code(base):
        extras += [n for n in names if n.endswith(".py")]
    return sorted(set(extras))


def copy_base_files(base: Path, out: Path) -> list[str]:
    """Copy `base_extras(base)` into `out` where saving did not already write them; returns those now in `out`.

    A file transformers wrote (the tokenizer's `chat_template.jinja`, the code `save_pretrained` copied) is
    kept: it is what the saved checkpoint was written with.
    """
    present = []
    for name in base_extras(base):
        target = out / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(base / name, target)
        present.append(name)
    return present


def _has_remote_code(base: Path) -> bool:
    try:
        config = json.loads((base / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and bool(config.get("auto_map"))
