"""The stages of one run, in order, with resume: load → prune → save → measure → card → publish.

    >>> outcome = run_pipeline(settings, RunOptions(output_dir=Path("runs/x"), command="publish-pruned ..."))
    >>> outcome.results.sparsity.actual_sparsity

The run folder is exactly what goes to the Hub (weights, config, tokenizer, `results.json`, `README.md`),
plus `.publish-pruned/` with each finished stage's record. A stage whose record holds the same settings
hash and whose files still hash the same is not recomputed; a stage cut off (no record) is redone.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .card import CardSettings, write_card
from .environment import environment, tool_info
from .errors import OutputDirError, SettingsError
from .evaluation import EVAL_DIR, EvalSettings, evaluate_run
from .model_io import ResolvedSource, digest_files, fetch_weights, load_model, resolve_source, save_checkpoint
from .placement import describe_placement, from_pretrained_kwargs
from .prune import PruneRequest, get_method, prune_model
from .prune.calibration import CalibrationSpec, load_calibration
from .prune.nm import checkpoint_nm_violations
from .prune.sparsity import measure_checkpoint
from .prune.streaming import NotStreamable, stream_prune
from .prune.structure import parse_structure
from .results import (
    RESULTS_FILE,
    FileDigest,
    LayerSparsity,
    PruneRecord,
    Results,
    SourceRecord,
    SparsityRecord,
    write_json_atomic,
    write_results,
)
from .settings import RunSettings, stable_hash

log = logging.getLogger(__name__)

STATE_DIR = ".publish-pruned"
DEFAULT_CACHE_DIR = Path(os.environ.get("PUBLISH_PRUNED_CACHE", Path.home() / ".cache" / "publish-pruned"))
CARD_FILE = "README.md"


@dataclass
class RunOptions:
    output_dir: Path
    command: str
    repo_id: str | None = None
    evaluation: EvalSettings | None = None  # None: no measure stage (sparsity only)
    cache_dir: Path = DEFAULT_CACHE_DIR
    card: CardSettings = field(default_factory=CardSettings)
    template_dir: Path | None = None
    overwrite: bool = False
    progress: bool = True
    endpoint: str | None = None  # Hub to read the base model from
    token: str | None = None
    on_stage: Callable[[str, str], None] = lambda stage, status: None  # ("prune", "done" | "skipped")


@dataclass
class RunOutcome:
    output_dir: Path
    card_path: Path
    results: Results
    files: dict[str, FileDigest]  # everything to publish, card and results included
    skipped: list[str]
    warnings: list[str]


def run_identity(settings: RunSettings) -> str:
    """What makes two invocations the same run (and allowed to share an output folder)."""
    keys = ("model", "revision", "method", "sparsity", "tie_policy", "seed", "dtype", "base_model_id", "structure",
            "calibration_dataset", "calibration_samples", "calibration_seq_len")
    return stable_hash({k: getattr(settings, k) for k in keys})


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
        run = self.record("run")
        if run is None and self.root.is_dir() and any(self.root.iterdir()):
            # Never delete a folder we did not create, even with --overwrite.
            raise OutputDirError(f"output folder {self.root} is not empty and is not a publish-pruned run folder")
        if run is not None and run.get("identity") != identity:
            if not overwrite:
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


def run_pipeline(settings: RunSettings, options: RunOptions) -> RunOutcome:
    """Run every stage up to the card; publishing is a separate step (`hub.publish`)."""
    get_method(settings.method)  # unknown method: fail before any work
    source = resolve_source(settings, endpoint=options.endpoint, token=options.token)
    folder = RunFolder(options.output_dir)
    folder.claim(run_identity(settings), options.overwrite)
    skipped: list[str] = []

    prune_key = settings.prune_key(source.identity)
    prune_state = folder.record("prune")
    if prune_state and prune_state.get("key") == prune_key and folder.files_intact(prune_state["files"]):
        skipped.append("prune")
        options.on_stage("prune", "skipped")
    else:
        prune_state = _prune_stage(settings, options, folder, source, prune_key)
        options.on_stage("prune", "done")

    checkpoint_files = {n: FileDigest(**d) for n, d in prune_state["files"].items()}
    pruning = PruneRecord(**dict(prune_state["pruning"], layers=[LayerSparsity(**x) for x in
                                                                  prune_state["pruning"]["layers"]]))
    sparsity_key = stable_hash(prune_state["files"])
    sparsity_state = folder.record("sparsity")
    if sparsity_state and sparsity_state.get("key") == sparsity_key:
        skipped.append("sparsity")
        options.on_stage("sparsity", "skipped")
        sparsity = SparsityRecord(**dict(sparsity_state["sparsity"], layers=[
            LayerSparsity(**x) for x in sparsity_state["sparsity"]["layers"]]))
    else:
        sparsity = measure_checkpoint(folder.root, [layer.name for layer in pruning.layers])
        structure = parse_structure(settings.structure)
        if not structure.unstructured:
            violations = checkpoint_nm_violations(folder.root, [layer.name for layer in pruning.layers], structure)
            sparsity.nm_violations = sum(violations.values())
            if sparsity.nm_violations:
                worst = max(violations, key=violations.get)
                raise OutputDirError(f"saved checkpoint breaks {structure}: {sparsity.nm_violations} groups with "
                                     f"fewer than {structure.n} zeros (most in {worst})")
        folder.write_record("sparsity", {"key": sparsity_key, "sparsity": dataclasses.asdict(sparsity)})
        options.on_stage("sparsity", "done")

    metrics = _measure_stage(settings, options, folder, source, prune_state, skipped)

    results = Results(
        tool=prune_state["tool"],
        settings={**settings.as_dict(), "repo_id": options.repo_id},
        source=SourceRecord(**prune_state["source"]),
        pruning=pruning,
        sparsity=sparsity,
        files=checkpoint_files,
        environment=prune_state["environment"],
        command=options.command,
        metrics=metrics,
    )
    write_results(folder.root / RESULTS_FILE, results)
    card_path, plots, warnings = write_card(results, options.card, folder.root, options.template_dir)
    options.on_stage("card", "done")
    published = dict(checkpoint_files)
    published.update(digest_files(folder.root, [RESULTS_FILE, CARD_FILE, *plots, *eval_files(folder.root)]))
    return RunOutcome(folder.root, folder.root / CARD_FILE, results, published, skipped, warnings)


def _prune_stage(settings: RunSettings, options: RunOptions, folder: RunFolder, source: ResolvedSource,
                 key: str) -> dict:
    """Load, prune and save into staging; move into place; write the record last (the commit point)."""
    old = folder.record("prune")
    folder.forget("prune", "sparsity", "measure")
    for name in [*(old or {}).get("files", {}), RESULTS_FILE, CARD_FILE]:
        (folder.root / name).unlink(missing_ok=True)
    shutil.rmtree(folder.root / EVAL_DIR, ignore_errors=True)
    shutil.rmtree(folder.staging, ignore_errors=True)
    try:
        return _prune_into_place(settings, options, folder, source, key)
    finally:
        shutil.rmtree(folder.offload, ignore_errors=True)


@dataclass
class _Pruned:
    """What pruning produced in the staging folder, however it was done."""

    pruning: PruneRecord
    files: list[str]
    model: dict  # architecture, model_type, num_parameters, dtype
    placement: str


def _prune_into_place(settings: RunSettings, options: RunOptions, folder: RunFolder, source: ResolvedSource,
                      key: str) -> dict:
    method = get_method(settings.method)
    if method.needs_calibration and settings.calibration_samples == 0:
        raise SettingsError(f"method {method.name!r} needs calibration data: --calibration-samples must be ≥ 1")
    weights_dir = fetch_weights(source, settings, endpoint=options.endpoint, token=options.token)
    done = _prune_streamed(settings, options, source, weights_dir, folder) or _prune_loaded(
        settings, options, source, weights_dir, folder)
    source_record = SourceRecord(
        kind=source.kind, reference=source.reference, base_model_id=source.base_model_id, revision=source.revision,
        content_sha256=source.content_sha256, **done.model, license=source.license,
        license_name=source.license_name, license_link=source.license_link, language=list(source.language),
    )
    files = digest_files(folder.staging, done.files)
    for name in done.files:
        (folder.staging / name).replace(folder.root / name)
    record = {
        "key": key,
        "files": {n: dataclasses.asdict(d) for n, d in files.items()},
        "source": dataclasses.asdict(source_record),
        "pruning": dataclasses.asdict(done.pruning),
        "tool": tool_info(),
        "environment": {**environment(settings.device), "placement": done.placement},
    }
    folder.write_record("prune", record)
    shutil.rmtree(folder.staging, ignore_errors=True)
    return record


def _request(settings: RunSettings, calibration=None) -> PruneRequest:
    return PruneRequest(method=settings.method, sparsity=settings.sparsity, tie_policy=settings.tie_policy,
                        seed=settings.seed, structure=settings.structure,
                        calibration=calibration.input_ids if calibration else None)


def _prune_streamed(settings: RunSettings, options: RunOptions, source: ResolvedSource, weights_dir: Path,
                    folder: RunFolder) -> _Pruned | None:
    """Per-matrix methods on plain safetensors on the CPU: file to file, one tensor in memory (else None)."""
    blocker = ("GGUF source" if source.gguf_file else "a device or device map was asked for"
               if settings.device_map or settings.device != "cpu" else
               "no safetensors files" if not any(weights_dir.glob("*.safetensors")) else None)
    try:
        if blocker:
            raise NotStreamable(blocker)
        streamed = stream_prune(weights_dir, folder.staging, _request(settings), dtype=settings.dtype,
                                shard_size=settings.shard_size, progress=options.progress)
    except NotStreamable as why:
        log.info("pruning the loaded model, not streaming: %s", why)
        shutil.rmtree(folder.staging, ignore_errors=True)
        return None
    model = {"architecture": streamed.architecture, "model_type": streamed.model_type,
             "num_parameters": streamed.num_parameters, "dtype": streamed.dtype}
    return _Pruned(streamed.record, streamed.files, model, "streamed from safetensors, one tensor at a time (cpu)")


def _prune_loaded(settings: RunSettings, options: RunOptions, source: ResolvedSource, weights_dir: Path,
                  folder: RunFolder) -> _Pruned:
    """Load the model (one device or a device map), prune it in place, save it."""
    model, tokenizer = load_model(source, weights_dir, settings, offload_dir=folder.offload)
    calibration = None
    if get_method(settings.method).needs_calibration:
        calibration = load_calibration(tokenizer, CalibrationSpec(
            settings.calibration_dataset, samples=settings.calibration_samples,
            seq_len=settings.calibration_seq_len, seed=settings.seed))
    pruning = prune_model(model, _request(settings, calibration), progress=options.progress)
    pruning.calibration = dataclasses.asdict(calibration.record) if calibration else None
    names = save_checkpoint(model, tokenizer, folder.staging, shard_size=settings.shard_size)
    facts = {"architecture": type(model).__name__, "model_type": model.config.model_type,
             "num_parameters": model.num_parameters(), "dtype": str(model.dtype).removeprefix("torch.")}
    return _Pruned(pruning, names, facts, describe_placement(model))


def eval_files(root: Path) -> list[str]:
    """Raw evaluation records in the run folder (published beside the results)."""
    return sorted(str(p.relative_to(root)) for p in (root / EVAL_DIR).glob("*.jsonl"))


def _measure_stage(settings: RunSettings, options: RunOptions, folder: RunFolder, source: ResolvedSource,
                   prune_state: dict, skipped: list[str]) -> dict | None:
    """Perplexity, SRS and latency, pruned vs dense; reused when nothing they depend on changed."""
    if options.evaluation is None:
        return None
    key = stable_hash({"eval": dataclasses.asdict(options.evaluation), "files": prune_state["files"],
                       "source": source.identity, "dtype": settings.dtype})
    state = folder.record("measure")
    if state and state.get("key") == key and all((folder.root / n).is_file() for n in state.get("files", [])):
        skipped.append("measure")
        options.on_stage("measure", "skipped")
        return state["metrics"]
    folder.forget("measure")

    def load_saved(path: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        placement = from_pretrained_kwargs(settings, folder.offload)
        model = AutoModelForCausalLM.from_pretrained(path, dtype="auto", **placement)
        if not placement:
            model.to(settings.device)
        return model.eval(), AutoTokenizer.from_pretrained(path)

    def dense_folder() -> Path:
        """A transformers folder of the dense model (MLX needs one); for GGUF, a copy saved once per run."""
        if source.gguf_file is None:
            return fetch_weights(source, settings, endpoint=options.endpoint, token=options.token)
        copy, done = folder.state / "dense", folder.state / "dense" / ".complete"
        if not done.is_file():
            model, tokenizer = load_model(source, source.local_path, settings, offload_dir=folder.offload)
            save_checkpoint(model, tokenizer, copy, shard_size=settings.shard_size)
            done.touch()
        return copy

    def load_dense():
        if source.gguf_file is None:
            return load_model(source, dense_folder(), settings, offload_dir=folder.offload)
        return load_saved(dense_folder())  # dequantizing the GGUF again would take longer than reading the copy

    try:
        metrics = evaluate_run(dense_identity=f"{source.identity}|{settings.dtype}", settings=options.evaluation,
                               run_dir=folder.root, cache_dir=options.cache_dir, load_dense=load_dense,
                               load_pruned=lambda: load_saved(folder.root), dense_folder=dense_folder)
    finally:
        shutil.rmtree(folder.offload, ignore_errors=True)
    folder.write_record("measure", {"key": key, "metrics": metrics, "files": eval_files(folder.root)})
    options.on_stage("measure", "done")
    return metrics
