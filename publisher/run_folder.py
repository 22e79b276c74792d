"""A run's output folder: exactly what goes to the Hub, plus `.publish-pruned/` with each finished stage's record.

    >>> folder = RunFolder(Path("runs/x"))
    >>> folder.claim(run_identity(settings), overwrite=False)   # empty, or this same run
    >>> folder.record("prune")                                   # None until the stage finished
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from .errors import OutputDirError
from .model_io import digest_files
from .results import write_json_atomic
from .settings import RunSettings, stable_hash

STATE_DIR = ".publish-pruned"
CARD_FILE = "README.md"
_CALIBRATION_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunSettings)
                         if f.name.startswith("calibration_")}


def run_identity(settings: RunSettings) -> str:
    """What makes two invocations the same run (and allowed to share an output folder)."""
    keys = ("model", "revision", "method", "sparsity", "tie_policy", "seed", "dtype", "base_model_id", "structure",
            "calibration_dataset", "calibration_samples", "calibration_seq_len")
    if not settings.uses_calibration:  # ignored by the method: the defaults stand in (folders of old runs match)
        settings = dataclasses.replace(settings, **_CALIBRATION_DEFAULTS)
    identity = {k: getattr(settings, k) for k in keys}
    if settings.calibration_revision is not None:  # absent when unset: folders of older runs still match
        identity["calibration_revision"] = settings.calibration_revision
    return stable_hash(identity)


class RunFolder:
    """The output folder's layout and its stage records."""

    def __init__(self, root: Path):
        self.root = root
        self.state = root / STATE_DIR
        self.staging = self.state / "staging"
        self.offload = self.state / "offload"  # accelerate's disk offload with --device-map; removed after use

    def record(self, stage: str) -> dict | None:
        path = self.state / f"{stage}.json"
        try:
            return json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def write_record(self, stage: str, data: dict) -> None:
        write_json_atomic(self.state / f"{stage}.json", data)

    def forget(self, *stages: str) -> None:
        for stage in stages:
            (self.state / f"{stage}.json").unlink(missing_ok=True)

    def claim(self, identity: str, overwrite: bool) -> None:
        """Make sure the folder is empty or holds this same run; `overwrite` clears a different one."""
        taken = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if taken is not None and not taken.is_dir():
            raise OutputDirError(f"output folder {self.root}: {taken} is a file, not a folder")
        run = self.record("run")
        if run is None and self.root.is_dir() and any(self.root.iterdir()):
            # Never delete a folder we did not create, even with --overwrite.
            raise OutputDirError(f"output folder {self.root} is not empty and is not a publish-pruned run folder")
        if run is not None and run.get("identity") != identity:
            # A run that failed before its first stage finished left nothing to lose: replace it freely.
            if not overwrite and self.record("prune") is not None:
                raise OutputDirError(
                    f"output folder {self.root} holds a different run; pass --overwrite or another --output-dir"
                )
            shutil.rmtree(self.root)
        self.state.mkdir(parents=True, exist_ok=True)
        self.write_record("run", {"identity": identity})

    def files_intact(self, files: dict[str, dict]) -> bool:
        for name, digest in files.items():
            path = self.root / name
            if not path.is_file() or path.stat().st_size != digest["size"]:
                return False
        return all(d.sha256 == files[n]["sha256"] for n, d in digest_files(self.root, list(files)).items())
