"""A run's output folder: exactly what goes to the Hub, plus `.publish-pruned/` with each finished stage's record.

    >>> folder = RunFolder(Path("runs/x"))
    >>> folder.claim(run_identity(settings), overwrite=False)   # empty, or this same run; locked for this process
    >>> folder.record("prune")                                   # None until the stage finished
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import shutil
from pathlib import Path
from typing import IO

from .errors import OutputDirError
from .model_io import digest_files
from .results import write_json_atomic
from .settings import RunSettings, stable_hash

STATE_DIR = ".publish-pruned"
LOCK_FILE = "lock"  # flock'ed by the process that claimed the folder
# What a run that finished no stage leaves: its identity, the lock, and staging/offload (never resumed).
_UNFINISHED = ("run.json", LOCK_FILE, "staging", "offload")
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
        self._lock_file: IO[str] | None = None  # held from `claim` to `release`
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
        """Lock the folder for this process and make sure it is empty or holds this same run.

        A different run is replaced when it finished no stage (`_UNFINISHED`), or with `overwrite`; otherwise
        refused. A folder another process holds is refused (call `release` when done).
        """
        taken = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if taken is not None and not taken.is_dir():
            raise OutputDirError(f"output folder {self.root}: {taken} is a file, not a folder")
        if self.root.is_dir() and any(p.name != STATE_DIR for p in self.root.iterdir()) and not self.record("run"):
            # Never delete a folder we did not create, even with --overwrite.
            raise OutputDirError(f"output folder {self.root} is not empty and is not a publish-pruned run folder")
        self.state.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            run = self.record("run")
            if run is not None and run.get("identity") != identity:
                if not overwrite and not self._holds_only(*_UNFINISHED):  # finished nothing: nothing to lose
                    raise OutputDirError(f"output folder {self.root} holds a different run; pass --overwrite or "
                                         "another --output-dir")
                self._clear()
            self.write_record("run", {"identity": identity})
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Let other processes claim the folder (also done when this process ends)."""
        if self._lock_file is not None:
            self._lock_file.close()  # closing the descriptor drops the flock
            self._lock_file = None

    def discard_if_unfinished(self) -> None:
        """Remove the folder when its run finished no stage (only its identity and staging left); else keep it."""
        with contextlib.suppress(OSError):  # never let the clean-up hide the error that ended the run
            if self._holds_only(*_UNFINISHED):
                shutil.rmtree(self.root)

    def _lock(self) -> None:
        handle = open(self.state / LOCK_FILE, "a+")  # noqa: SIM115 - held open until release()
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise OutputDirError(f"output folder {self.root} is in use by another publish-pruned run; wait for it "
                                 "to finish or pass another --output-dir") from None
        self._lock_file = handle

    def _holds_only(self, *names: str) -> bool:
        """Nothing in the folder but the state folder, and nothing in that but `names`."""
        return all(p == self.state for p in self.root.iterdir()) and \
            {p.name for p in self.state.iterdir()} <= set(names)

    def _clear(self) -> None:
        """Remove the other run's files, keeping the lock this process holds."""
        doomed = [p for p in self.root.iterdir() if p != self.state]
        for path in doomed + [p for p in self.state.iterdir() if p.name != LOCK_FILE]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def files_intact(self, files: dict[str, dict]) -> bool:
        for name, digest in files.items():
            path = self.root / name
            if not path.is_file() or path.stat().st_size != digest["size"]:
                return False
        return all(d.sha256 == files[n]["sha256"] for n, d in digest_files(self.root, list(files)).items())
