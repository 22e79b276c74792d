"""The stages of one run, in order, with resume: load → prune → save → measure → card → publish.

    >>> outcome = run_pipeline(settings, RunOptions(output_dir=Path("runs/x"), command="publish-pruned ..."))
    >>> outcome.results.sparsity.actual_sparsity

The run folder is exactly what goes to the Hub (weights, config, tokenizer, `results.json`, `README.md`),
plus `.publish-pruned/` with each finished stage's record. A stage whose record holds the same settings
hash and whose files still hash the same is not recomputed; a stage cut off (no record) is redone.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .card import CardSettings, write_card
from .environment import tool_info
from .errors import OutputDirError
from .evaluation import EVAL_DIR, EvalSettings, evaluate_run
from .hub.extras import inherited_gate
from .hub_data import moved_dataset
from .local_paths import path_forms, public_command, public_paths, recorded_path
from .model_io import (
    ResolvedSource,
    digest_files,
    fetch_weights,
    load_checkpoint,
    load_model,
    resolve_source,
    save_checkpoint,
)
from .placement import check_devices_present
from .prune import get_method
from .prune.calibration import DEFAULT_DATASET, moved_calibration
from .prune.nm import checkpoint_nm_violations
from .prune.scope import check_prunable_scope
from .prune.sparsity import measure_checkpoint, weight_locations
from .prune.structure import parse_structure
from .prune_stage import prune_stage
from .results import (
    RESULTS_FILE,
    FileDigest,
    LayerSparsity,
    PruneRecord,
    Results,
    SourceRecord,
    SparsityRecord,
    write_results,
)
from .run_folder import CARD_FILE, RunFolder, run_identity
from .settings import RunSettings, stable_hash

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("PUBLISH_PRUNED_CACHE", Path.home() / ".cache" / "publish-pruned"))


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
    gated: str | None = None  # --gated as given; None: a gated base repo's mode is inherited (recorded, warned)
    on_stage: Callable[[str, str], None] = lambda stage, status: None  # ("prune", "done" | "skipped")


@dataclass
class RunOutcome:
    output_dir: Path
    card_path: Path
    results: Results
    files: dict[str, FileDigest]  # everything to publish, card and results included
    skipped: list[str]
    warnings: list[str]


def run_pipeline(settings: RunSettings, options: RunOptions) -> RunOutcome:
    """Run every stage up to the card; publishing is a separate step (`hub.publish`)."""
    get_method(settings.method)  # unknown method: fail before any work
    check_devices_present(settings)
    source = resolve_source(settings, endpoint=options.endpoint, token=options.token)
    _check_scope_early(settings, source, options)
    folder = RunFolder(options.output_dir)
    created = not folder.root.exists()
    folder.claim(run_identity(settings), options.overwrite)
    try:
        return _run_stages(settings, options, folder, source)
    except BaseException:
        if created:
            folder.discard_if_unfinished()  # under the lock: a run that failed before any stage finished
        raise                               # leaves no folder
    finally:
        folder.release()


def _check_scope_early(settings: RunSettings, source: ResolvedSource, options: RunOptions) -> None:
    """Refuse from the config alone a model the prune stage would refuse after downloading and loading it
    (experts outside nn.Linear): a Hub MoE is tens of GB."""
    import torch
    from transformers import AutoModelForCausalLM

    from .plan import load_config

    where = source.reference if source.local_path is None else str(source.local_path / (source.gguf_file or ""))
    try:
        config = load_config(where, revision=source.revision, endpoint=options.endpoint, token=options.token,
                             trust_remote_code=settings.trust_remote_code)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=settings.trust_remote_code)
    except Exception:  # the load path reports what is wrong with the model, properly
        return
    check_prunable_scope(skeleton)
    if settings.drops_experts:  # a dense model, or more experts kept than it has: before any download
        from .prune import PruneRequest
        from .prune.expert_drop import check_drop_request

        check_drop_request(skeleton, PruneRequest(
            settings.method, 0.0, experts_keep=settings.experts_keep, experts_keep_n=settings.experts_keep_n,
            expert_saliency=settings.expert_saliency))


def _run_stages(settings: RunSettings, options: RunOptions, folder: RunFolder, source: ResolvedSource) -> RunOutcome:
    skipped: list[str] = []

    prune_key = settings.prune_key(source.identity)
    prune_state = folder.record("prune")
    if prune_state and prune_state.get("key") == prune_key and folder.files_intact(prune_state["files"]) \
            and _layers_saved(folder, prune_state) and _carries_base_files(prune_state) \
            and not _calibration_moved(settings, prune_state):
        skipped.append("prune")
        options.on_stage("prune", "skipped")
    else:
        prune_state = prune_stage(settings, folder, source, prune_key, progress=options.progress,
                                  endpoint=options.endpoint, token=options.token)
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

    # The gate is a setting of the base repo, not of its commit: read now, not when the prune stage ran
    record = SourceRecord(**dict(prune_state["source"], gated=source.gated))
    gated, gate_warning = inherited_gate(options.gated, record)
    results = Results(
        tool=tool_info(),  # what wrote these results and the card (the prune record keeps its own)
        settings={**settings.as_dict(), "repo_id": options.repo_id, "gated": gated,
                  "gated_from_base": gated is not None and options.gated is None},
        source=record,
        pruning=pruning,
        sparsity=sparsity,
        files=checkpoint_files,
        environment=prune_state["environment"],
        command=options.command,
        metrics=metrics,
    )
    results = _published(results, settings, options, source)  # no absolute local path leaves this machine
    write_results(folder.root / RESULTS_FILE, results)
    card_path, linked, warnings = write_card(results, options.card, folder.root, options.template_dir)
    options.on_stage("card", "done")
    published = dict(checkpoint_files)
    published.update(digest_files(folder.root, [RESULTS_FILE, CARD_FILE, *linked, *eval_files(folder.root)]))
    return RunOutcome(folder.root, folder.root / CARD_FILE, results, published, skipped,
                      [*warnings, *([gate_warning] if gate_warning else [])])


def _layers_saved(folder: RunFolder, prune_state: dict) -> bool:
    """Whether every pruned layer the record names is in the saved files (records of older versions named some
    models' layers by module name where the files use checkpoint names)."""
    saved = weight_locations(folder.root)
    return all(layer["name"] in saved for layer in prune_state["pruning"]["layers"])


def _carries_base_files(prune_state: dict) -> bool:
    """Whether the prune stage copied the base's license terms and templates (records of older versions did
    not, and their checkpoints lack them)."""
    return "license_files" in prune_state.get("source", {})


def _calibration_moved(settings: RunSettings, prune_state: dict) -> bool:
    """Whether an unpinned Hub calibration dataset now holds other data than the weights were pruned with (the
    prune key holds its name only; a local file's sha256 and a pinned revision are in the key)."""
    used = (prune_state["pruning"].get("calibration") or {}).get("revision")
    if not settings.uses_calibration or not used:
        return False
    now = moved_calibration(settings.calibration_dataset, settings.calibration_revision, used)
    if now is not None:
        log.warning("calibration dataset %s moved from %s to %s with other data: pruning again",
                    settings.calibration_dataset or DEFAULT_DATASET, used[:12], now[:12])
    return now is not None


def _measurement_data_moved(evaluation: EvalSettings, metrics: dict) -> bool:
    """Whether Hub data a stored measurement read (perplexity rows, BBQ) now holds other data than the commit
    it recorded (the measure key holds the dataset names only; local files' sha256 are in the key)."""
    from .measure.bbq import bbq_source
    from .measure.perplexity import ppl_source

    read: list[tuple[str, str | None]] = []
    if evaluation.runs("ppl") and (ppl := ppl_source(evaluation.ppl_data)).kind == "hub":
        read.append((ppl.name, ((metrics.get("perplexity") or {}).get("pruned") or {}).get("data", {}).get("revision")))
    if evaluation.runs("srs") and (bbq := bbq_source(evaluation.bbq_path)).kind == "hub":
        label = ((metrics.get("srs") or {}).get("data") or {}).get("source") or ""  # hub:<name>@<commit>
        read.append((bbq.name, label.rpartition("@")[2] or None))
    for section in (metrics.get("perplexity_presets") or {}).values():  # wikitext2, c4: read at the commit recorded
        label = ((section.get("pruned") or {}).get("data") or {}).get("source") or ""
        if label.startswith("hub:"):
            read.append((label[4:].rpartition("@")[0], label.rpartition("@")[2] or None))
    for name, used in read:
        now = moved_dataset(name, None, used) if used else None
        if now is not None:
            log.warning("dataset %s moved from %s to %s with other data: measuring again", name, used[:12], now[:12])
            return True
    return False


def eval_files(root: Path) -> list[str]:
    """Raw evaluation records in the run folder (published beside the results)."""
    return sorted(str(p.relative_to(root)) for p in (root / EVAL_DIR).glob("*.jsonl"))


def _published(results: Results, settings: RunSettings, options: RunOptions, source: ResolvedSource) -> Results:
    """`results` as published: every local input path (base model, calibration file, device map, perplexity
    data, BBQ) recorded relative to the working folder or by name (`local_paths`), wherever it appears; the
    command with the base's content hash beside its name. The stage records keep the paths as given."""
    local = [settings.model] if source.local_path is not None else []
    local += [p for p in (settings.calibration_dataset, settings.device_map) if p and Path(p).is_file()]
    evaluation = options.evaluation
    local += [p for p in (evaluation.ppl_data, evaluation.bbq_path, *evaluation.literature_paths())
              if p and Path(p).exists()] if evaluation else []
    replacements = {form: recorded_path(path) for path in local for form in path_forms(path)}
    if source.local_path is not None:
        replacements |= dict.fromkeys(path_forms(source.reference), recorded_path(settings.model))
    public = public_paths(results.to_json(), replacements)
    public["command"] = public_command(results.command, {settings.model: source.content_sha256}
                                       if source.local_path is not None else None)
    return Results.from_json(public)


def _dense_identity(source: ResolvedSource, settings: RunSettings) -> str:
    """What decides the dense model's figures besides the protocol: the exact base, its dtype, the kind of
    device it runs on (CPU and GPU kernels differ in the last digits) and the tool's version."""
    where = "device-map" if settings.device_map else settings.device.split(":")[0]
    return f"{source.identity}|{settings.dtype}|{where}|{__version__}"


def _measure_stage(settings: RunSettings, options: RunOptions, folder: RunFolder, source: ResolvedSource,
                   prune_state: dict, skipped: list[str]) -> dict | None:
    """Perplexity, SRS and latency, pruned vs dense; reused when nothing they depend on changed."""
    evaluation = options.evaluation
    if evaluation is not None:
        key = stable_hash({"eval": evaluation.key(), "inputs": evaluation.input_digests(),
                           "files": prune_state["files"], "source": source.identity,
                           "dense": _dense_identity(source, settings)})
        state = folder.record("measure")
        if state and state.get("key") == key and isinstance(state.get("files"), dict) \
                and folder.files_intact(state["files"]) \
                and not _measurement_data_moved(evaluation, state["metrics"]):  # files: the replies, byte for byte
            skipped.append("measure")
            options.on_stage("measure", "skipped")
            return state["metrics"]
    folder.forget("measure")
    shutil.rmtree(folder.root / EVAL_DIR, ignore_errors=True)  # no reply file of another measurement is published
    if evaluation is None:
        return None

    def load_saved(path: Path):
        return load_checkpoint(path, settings, offload_dir=folder.offload)

    def dense_folder() -> Path:
        """A transformers folder of the dense model (MLX needs one); for GGUF, a copy saved once per run."""
        if source.gguf_file is None:
            return fetch_weights(source, settings, endpoint=options.endpoint, token=options.token)
        copy, done = folder.state / "dense", folder.state / "dense" / ".complete"
        made_from = f"{source.identity}|{settings.dtype}"  # the GGUF's content: it may change at the same path
        if not done.is_file() or done.read_text() != made_from:
            shutil.rmtree(copy, ignore_errors=True)
            model, tokenizer = load_model(source, source.local_path, settings, offload_dir=folder.offload)
            save_checkpoint(model, tokenizer, copy, shard_size=settings.shard_size)
            done.write_text(made_from)
        return copy

    def load_dense():
        if source.gguf_file is None:
            return load_model(source, dense_folder(), settings, offload_dir=folder.offload)
        return load_saved(dense_folder())  # dequantizing the GGUF again would take longer than reading the copy

    try:
        metrics = evaluate_run(dense_identity=_dense_identity(source, settings), settings=evaluation,
                               run_dir=folder.root, cache_dir=options.cache_dir, load_dense=load_dense,
                               load_pruned=lambda: load_saved(folder.root), dense_folder=dense_folder,
                               device=settings.device,
                               num_parameters=prune_state["source"]["num_parameters"])
    finally:
        shutil.rmtree(folder.offload, ignore_errors=True)
    files = {n: dataclasses.asdict(d) for n, d in digest_files(folder.root, eval_files(folder.root)).items()}
    folder.write_record("measure", {"key": key, "metrics": metrics, "files": files})
    options.on_stage("measure", "done")
    return metrics
