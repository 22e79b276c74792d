"""Run settings: what the user asked for, validated once, frozen and hashable.

Protocol defaults of the study (arXiv 2605.08137) live here and nowhere else.

    >>> s = RunSettings(model="google/gemma-2-9b-it", sparsity=0.5)
    >>> s.repo_name("alice")
    'alice/gemma-2-9b-it-magnitude-s50'
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import SettingsError
from .hashing import sha256_file

DTYPES = ("auto", "float32", "bfloat16", "float16")
TIE_POLICIES = ("exact", "threshold")
DEFAULT_SEED = 42  # the study's seed for random masks
DEFAULT_SHARD_SIZE = "5GB"
_SHARD_SIZE = re.compile(r"\d+(\.\d+)?(KB|MB|GB|TB)")  # the units huggingface_hub's shard splitter reads

_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,94}[A-Za-z0-9]$|^[A-Za-z0-9]$")


@dataclass(frozen=True)
class RunSettings:
    """Everything that decides what a run produces. Hashes of subsets identify finished stages."""

    model: str
    sparsity: float | None  # None only for expert-drop, which removes experts (`experts_keep[_n]`) instead
    method: str = "magnitude"
    revision: str | None = None
    tie_policy: str = "exact"
    seed: int = DEFAULT_SEED
    dtype: str = "auto"
    device: str = "cpu"  # "auto" is resolved when the settings are made (placement.resolve_device)
    device_map: str | None = None  # accelerate strategy ("auto", ...) or a .json module → device file
    max_memory: str | None = None  # with device_map: "0=70GiB,cpu=200GiB"
    base_model_id: str | None = None
    trust_remote_code: bool = False
    trust_pickled_weights: bool = False
    shard_size: str = DEFAULT_SHARD_SIZE
    structure: str = "unstructured"  # or N:M, e.g. "2:4"
    calibration_dataset: str | None = None  # None: allenai/c4 (en); or a local .json/.jsonl/.json.gz file
    calibration_samples: int = 128
    calibration_seq_len: int = 2048
    calibration_revision: str | None = None  # a Hub dataset's branch, tag or commit [default: main, pinned]
    # Mixture-of-experts models (`prune/experts.py`): how Wanda/SparseGPT feed experts ("routed" | "all"), and
    # expert-drop's experts kept per layer (a fraction or a count) and saliency ("reap" | "frequency")
    moe_calibration: str = "routed"
    experts_keep: float | None = None
    experts_keep_n: int | None = None
    expert_saliency: str = "reap"

    def __post_init__(self) -> None:
        self._check_moe_options()
        if not self.drops_experts and (self.sparsity is None or not (0.0 < self.sparsity < 1.0)):
            given = "none" if self.sparsity is None else f"{self.sparsity:g}"
            raise SettingsError(f"--sparsity must be strictly between 0 and 1, got {given}")
        if self.dtype not in DTYPES:
            raise SettingsError(f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.tie_policy not in TIE_POLICIES:
            raise SettingsError(f"--magnitude-ties must be one of {', '.join(TIE_POLICIES)}")
        if self.base_model_id is not None:
            validate_repo_id(self.base_model_id, what="--base-model-id")
        if not isinstance(self.structure, str):  # YAML reads an unquoted 2:4 as the number 124
            raise SettingsError(f"structure must be text such as \"2:4\" (quote it in YAML), got {self.structure!r}")
        from .prune.structure import parse_structure  # late: prune imports torch

        if not self.drops_experts:
            parse_structure(self.structure).check_sparsity(self.sparsity)
        from .placement import check_placement, resolve_device

        # `auto` becomes the device it chose, so results, records and the card name a real device
        object.__setattr__(self, "device", resolve_device(self.device, self.device_map))
        check_placement(device=self.device, device_map=self.device_map, max_memory=self.max_memory,
                        model=self.model)
        if self.calibration_samples < 0 or self.calibration_seq_len < 1:
            raise SettingsError("--calibration-samples must be ≥ 0 and --calibration-seq-len ≥ 1")
        if not _SHARD_SIZE.fullmatch(str(self.shard_size)) or float(str(self.shard_size)[:-2]) <= 0:
            raise SettingsError(f"--shard-size must be a positive size in KB, MB, GB or TB (e.g. 5GB), "
                                f"got {self.shard_size!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise SettingsError(f"--seed must be a non-negative integer, got {self.seed!r}")
        from .prune.calibration import LOCAL_SUFFIXES

        if self.uses_calibration and self.calibration_dataset and not Path(self.calibration_dataset).is_file() \
                and self.calibration_dataset.endswith(LOCAL_SUFFIXES):  # found now, not after --overwrite cleared
            raise SettingsError(f"calibration file {self.calibration_dataset} does not exist")
        if self.calibration_revision is not None and self.calibration_file_sha256() is not None:
            raise SettingsError("--calibration-revision pins a Hub dataset; a local calibration file has none")

    def _check_moe_options(self) -> None:
        """expert-drop takes --experts-keep or --experts-keep-n instead of --sparsity; the others the reverse."""
        from .prune.moe_options import check_keep, check_moe_choices  # late: prune imports torch

        check_moe_choices(self.moe_calibration, self.expert_saliency)
        keep = (self.experts_keep, self.experts_keep_n)
        if not self.drops_experts:
            if keep != (None, None):
                raise SettingsError("--experts-keep and --experts-keep-n apply to --method expert-drop only")
            return
        if self.sparsity is not None:
            raise SettingsError("expert-drop removes whole experts: give --experts-keep F (the fraction of each "
                                "layer's experts kept) or --experts-keep-n K, not --sparsity")
        check_keep(experts_keep=self.experts_keep, experts_keep_n=self.experts_keep_n,
                   unstructured=self.structure == "unstructured")

    @property
    def drops_experts(self) -> bool:
        """Whether the method removes whole experts (the registry says) rather than zeroing weights."""
        from .prune import METHODS  # late: prune imports torch

        return self.method in METHODS and METHODS[self.method].drops_experts

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def prune_key(self, source_identity: str) -> str:
        """Hash of what decides the pruned weights: the exact source, method, target and numerics."""
        versions = {"random_masks": "one generator per matrix"} if self.method == "random" else {}
        return stable_hash(
            {
                **versions,
                "source": source_identity,
                "method": self.method,
                "sparsity": self.sparsity,
                "tie_policy": self.tie_policy,
                "seed": self.seed,
                "dtype": self.dtype,
                "shard_size": self.shard_size,
                "structure": self.structure,
                "calibration": [self.calibration_dataset, self.calibration_file_sha256(),
                                self.calibration_samples, self.calibration_seq_len,
                                *([self.calibration_revision] if self.calibration_revision else [])]
                if self.uses_calibration else None,
                # MoE settings only where they are not the defaults: dense runs keep their keys
                **({"moe_calibration": self.moe_calibration} if self.moe_calibration != "routed" else {}),
                **({"experts": [self.experts_keep, self.experts_keep_n, self.expert_saliency]}
                   if self.drops_experts else {}),
            }
        )

    @property
    def uses_calibration(self) -> bool:
        """Whether the method reads calibration data (the method registry says), so its settings shape the weights."""
        from .prune import get_method  # late: prune imports torch

        return get_method(self.method).needs_calibration

    def calibration_file_sha256(self) -> str | None:
        """sha256 of a local calibration file, so an edited file at the same path is not taken as the same run."""
        path = self.calibration_dataset
        return sha256_file(path) if path and Path(path).is_file() else None

    def base_name(self) -> str:
        """The base model's short name, as it appears in repo names."""
        if self.base_model_id:
            return self.base_model_id.split("/")[-1]
        path = Path(self.model)
        if path.suffix == ".gguf":
            return path.stem.split(".")[0]
        return path.name if path.exists() else self.model.rstrip("/").split("/")[-1]

    def repo_name(self, namespace: str, suffix: str | None = None) -> str:
        """Default repo id: `<namespace>/<base-name-lowercase>-<method>-s<NN>[-<NofM>][-<suffix>]`."""
        return f"{namespace}/{self.base_name().lower()}-{self.variant_name(suffix)}"

    def variant_name(self, suffix: str | None = None) -> str:
        """What a repo name adds to the base name: `<method>-s<NN>[-<NofM>][-<suffix>]`; expert-drop:
        `expert-drop-k<NN>` (percent of experts kept) or `-n<K>`, `-freq` for frequency saliency."""
        if self.drops_experts:
            kept = f"k{round(self.experts_keep * 100):02d}" if self.experts_keep is not None else \
                f"n{self.experts_keep_n}"
            name = f"{self.method}-{kept}{'-freq' if self.expert_saliency == 'frequency' else ''}"
            return f"{name}-{suffix}" if suffix else name
        name = f"{self.method}-s{round(self.sparsity * 100):02d}"
        if self.moe_calibration != "routed":  # routed and all-token calibration must not share a repo
            name = f"{name}-moe{self.moe_calibration}"
        if self.structure != "unstructured":  # 2:4 and unstructured runs must not share a repo
            name = f"{name}-{self.structure.replace(':', 'of')}"
        return f"{name}-{suffix}" if suffix else name


def validate_repo_id(repo_id: str, what: str = "--repo-id") -> str:
    """Check `namespace/name` against the Hub's naming rules; return it unchanged."""
    parts = repo_id.split("/")
    bad = (
        len(parts) != 2
        or not all(_REPO_NAME.match(p) for p in parts)
        or any(s in repo_id for s in ("--", ".."))
        or repo_id.endswith(".git")
    )
    if bad:
        raise SettingsError(
            f"{what} {repo_id!r} is not a valid Hub repo id (expected 'namespace/name': letters, digits, "
            "'-', '_', '.'; no '--' or '..'; at most 96 characters each)"
        )
    return repo_id


def stable_hash(obj: object) -> str:
    """sha256 of the canonical JSON of `obj` (sorted keys), as hex."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()
