"""Typed records that stages exchange, and the only code that reads or writes `results.json`.

    >>> results = read_results(Path("runs/x/results.json"))
    >>> results.sparsity.actual_sparsity
    0.5
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import OutputDirError

SCHEMA_VERSION = 1
RESULTS_FILE = "results.json"


@dataclass
class FileDigest:
    sha256: str
    size: int


@dataclass
class SourceRecord:
    """Where the base model came from, pinned: a Hub commit or a content hash of the local files."""

    kind: str  # "hub" | "folder" | "gguf"
    reference: str  # what the user passed to --model
    base_model_id: str | None  # a Hub id for the card's `base_model`, when known
    revision: str | None  # resolved Hub commit sha (kind == "hub")
    content_sha256: str | None  # hash of the local weight/config files (kind != "hub")
    architecture: str
    model_type: str
    num_parameters: int
    dtype: str
    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    language: list[str] = field(default_factory=list)
    # Passed on with the checkpoint (absent in results of older versions: the defaults stand in)
    license_files: list[str] = field(default_factory=list)  # the base's license terms, copied and published
    gated: str | None = None  # the base Hub repo's gate ("auto" | "manual"), inherited by a push without --gated
    gating: dict[str, Any] = field(default_factory=dict)  # the base card's extra_gated_* fields, put on the card
    gguf_quantization: str | None = None  # kind "gguf": the file's quantization (its dequantized weights were pruned)

    @property
    def identity(self) -> str:
        return f"{self.kind}:{self.reference}@{self.revision or self.content_sha256}"


@dataclass
class LayerSparsity:
    name: str  # the tensor's name in the checkpoint
    shape: list[int]
    params: int
    zeros: int

    @property
    def sparsity(self) -> float:
        return self.zeros / self.params if self.params else 0.0


@dataclass
class PruneRecord:
    method: str
    structure: str
    target_sparsity: float
    tie_policy: str
    seed: int
    scope: str  # human-readable description of what was prunable
    prune_time_s: float  # inside the method (calibration forwards included); not loading, reading or saving
    layers: list[LayerSparsity]  # counted on the in-memory model, right after pruning
    calibration: dict[str, Any] | None = None  # dataset, revision or file sha256, samples, seq_len, token hash
    # Mixture-of-experts models: what was done to the experts (routed calibration: tokens per expert, fallbacks;
    # expert dropping: saliency, experts kept per layer, parameters before/after). Absent for dense models.
    moe: dict[str, Any] | None = None
    peak_gpu_bytes: int | None = None  # CUDA: the most GPU memory the method held (None on other devices)


@dataclass
class SparsityRecord:
    """Sparsity counted by streaming the saved safetensors: what the card reports is what was published."""

    measured_from: str
    prunable_params: int
    zero_params: int
    layers: list[LayerSparsity]
    nm_violations: int | None = None  # N:M structures: groups with fewer than N zeros, over every matrix
    # Mixture-of-experts models: sparsity by kind and its spread across experts and layers (`prune.moe_sparsity`)
    moe: dict[str, Any] | None = None

    @property
    def actual_sparsity(self) -> float:
        return self.zero_params / self.prunable_params if self.prunable_params else 0.0


@dataclass
class Results:
    tool: dict[str, Any]
    settings: dict[str, Any]
    source: SourceRecord
    pruning: PruneRecord
    sparsity: SparsityRecord
    files: dict[str, FileDigest]
    environment: dict[str, Any]
    command: str
    metrics: dict[str, Any] | None = None  # the measure stage's output (evaluation.py); None when not run
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sparsity"]["actual_sparsity"] = self.sparsity.actual_sparsity
        for section in ("pruning", "sparsity"):
            for layer, obj in zip(data[section]["layers"], getattr(self, section).layers, strict=True):
                layer["sparsity"] = obj.sparsity
            if data[section]["moe"] is None:  # dense models' results stay as they were
                del data[section]["moe"]
        return {"schema_version": data.pop("schema_version"), **data}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        version = data.get("schema_version")
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise OutputDirError(
                f"results schema version {version!r} is newer than this tool understands ({SCHEMA_VERSION}); "
                "upgrade publish-pruned"
            )

        def layers(items: list[dict]) -> list[LayerSparsity]:
            return [LayerSparsity(**{k: v for k, v in i.items() if k != "sparsity"}) for i in items]

        pruning = dict(data["pruning"], layers=layers(data["pruning"]["layers"]))
        sparsity = {k: v for k, v in data["sparsity"].items() if k != "actual_sparsity"}
        sparsity["layers"] = layers(sparsity["layers"])
        return cls(
            tool=data["tool"],
            settings=data["settings"],
            source=SourceRecord(**data["source"]),
            pruning=PruneRecord(**pruning),
            sparsity=SparsityRecord(**sparsity),
            files={k: FileDigest(**v) for k, v in data["files"].items()},
            environment=data["environment"],
            command=data["command"],
            metrics=data.get("metrics"),
            schema_version=version,
        )


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """A temp path beside `path` to write to, renamed onto `path` when the block ends: a reader (or a push)
    never sees half a file, and a full disk or Ctrl-C leaves no half-written temp file behind.

        >>> with replacing(card_path) as tmp:
        ...     tmp.write_text(text)
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON through `replacing`, fsynced before the rename."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_results(path: Path, results: Results) -> None:
    write_json_atomic(path, results.to_json())


def read_results(path: Path) -> Results:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise OutputDirError(f"no results file at {path}") from None
    except json.JSONDecodeError as exc:
        raise OutputDirError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    try:
        if not isinstance(data, dict):
            raise TypeError(f"a JSON {type(data).__name__}, not an object")
        return Results.from_json(data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise OutputDirError(f"{path} does not look like a publish-pruned results file ({exc})") from None
