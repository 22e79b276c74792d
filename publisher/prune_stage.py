"""The prune stage: base weights → pruned checkpoint in the run folder, with its record written last.

    >>> record = prune_stage(settings, RunFolder(Path("runs/x")), source, settings.prune_key(source.identity))

Per-matrix methods (magnitude, random) on plain safetensors on the CPU stream file to file
(`prune/streaming.py`); everything else loads the model (one device or a device map), prunes it in place
and saves it. Either way the files land in staging first and move into place before the record is written,
so an interrupted stage leaves nothing that looks finished.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from .base_files import copy_base_files, license_files
from .environment import environment, tool_info
from .errors import SettingsError
from .evaluation import EVAL_DIR
from .model_io import ResolvedSource, digest_files, fetch_weights, load_model, save_checkpoint, saved_weight_names
from .placement import describe_placement
from .prune import PruneRequest, get_method, prune_model
from .prune.calibration import CalibrationSet, CalibrationSpec, load_calibration
from .prune.scope import prunable_matrices
from .prune.streaming import NotStreamable, stream_prune
from .results import RESULTS_FILE, PruneRecord, SourceRecord
from .run_folder import CARD_FILE, RunFolder
from .settings import RunSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Fetch:
    """How the stage reports progress and reaches the Hub."""

    progress: bool
    endpoint: str | None
    token: str | None


def prune_stage(settings: RunSettings, folder: RunFolder, source: ResolvedSource, key: str, *,
                progress: bool = True, endpoint: str | None = None, token: str | None = None) -> dict:
    """Load, prune and save into staging; move into place; write the record last (the commit point)."""
    old = folder.record("prune")
    folder.forget("prune", "sparsity", "measure")
    for name in [*(old or {}).get("files", {}), RESULTS_FILE, CARD_FILE]:
        (folder.root / name).unlink(missing_ok=True)
    shutil.rmtree(folder.root / EVAL_DIR, ignore_errors=True)
    shutil.rmtree(folder.staging, ignore_errors=True)
    try:
        return _prune_into_place(settings, _Fetch(progress, endpoint, token), folder, source, key)
    finally:
        shutil.rmtree(folder.offload, ignore_errors=True)


@dataclass
class _Pruned:
    """What pruning produced in the staging folder, however it was done."""

    pruning: PruneRecord
    files: list[str]
    facts: dict[str, str | int]  # architecture, model_type, num_parameters, dtype: for the source record
    placement: str


def _prune_into_place(settings: RunSettings, options: _Fetch, folder: RunFolder, source: ResolvedSource,
                      key: str) -> dict:
    method = get_method(settings.method)
    if method.needs_calibration and settings.calibration_samples == 0:
        raise SettingsError(f"method {method.name!r} needs calibration data: --calibration-samples must be ≥ 1")
    weights_dir = fetch_weights(source, settings, endpoint=options.endpoint, token=options.token)
    pruned = _prune_streamed(settings, options, source, weights_dir, folder) or _prune_loaded(
        settings, options, source, weights_dir, folder)
    # License terms, chat templates and model code that saving leaves out travel with the checkpoint
    extras = copy_base_files(weights_dir, folder.staging)
    pruned.files = sorted({*pruned.files, *extras})
    source_record = SourceRecord(
        kind=source.kind, reference=source.reference, base_model_id=source.base_model_id, revision=source.revision,
        content_sha256=source.content_sha256, **pruned.facts, license=source.license,
        license_name=source.license_name, license_link=source.license_link, language=list(source.language),
        license_files=license_files(extras), gated=source.gated, gating=dict(source.gating),
        gguf_quantization=source.gguf_quantization,
    )
    files = digest_files(folder.staging, pruned.files)
    for name in pruned.files:
        (folder.root / name).parent.mkdir(parents=True, exist_ok=True)  # additional_chat_templates/
        (folder.staging / name).replace(folder.root / name)
    record = {
        "key": key,
        "files": {n: dataclasses.asdict(d) for n, d in files.items()},
        "source": dataclasses.asdict(source_record),
        "pruning": dataclasses.asdict(pruned.pruning),
        "tool": tool_info(),
        # what ran this stage (a resumed run may be given other placement options; the card shows these)
        "environment": {**environment(settings.device, gpus=bool(settings.device_map)), "placement": pruned.placement,
                        "device_map": settings.device_map},
    }
    folder.write_record("prune", record)
    shutil.rmtree(folder.staging, ignore_errors=True)
    return record


def _request(settings: RunSettings, calibration: CalibrationSet | None = None) -> PruneRequest:
    return PruneRequest(method=settings.method, sparsity=settings.sparsity or 0.0, tie_policy=settings.tie_policy,
                        seed=settings.seed, structure=settings.structure,
                        calibration=calibration.input_ids if calibration else None,
                        moe_calibration=settings.moe_calibration, experts_keep=settings.experts_keep,
                        experts_keep_n=settings.experts_keep_n, expert_saliency=settings.expert_saliency)


def _prune_streamed(settings: RunSettings, options: _Fetch, source: ResolvedSource, weights_dir: Path,
                    folder: RunFolder) -> _Pruned | None:
    """Per-matrix methods on plain safetensors on the CPU: file to file, one tensor in memory (else None)."""
    blocker = ("GGUF source" if source.gguf_file else "a device or device map was asked for"
               if settings.device_map or settings.device != "cpu" else
               "no safetensors files" if not any(weights_dir.glob("*.safetensors")) else None)
    try:
        if blocker:
            raise NotStreamable(blocker)
        streamed = stream_prune(weights_dir, folder.staging, _request(settings), dtype=settings.dtype,
                                trust_remote_code=settings.trust_remote_code,
                                shard_size=settings.shard_size, progress=options.progress)
    except NotStreamable as why:
        log.info("pruning the loaded model, not streaming: %s", why)
        shutil.rmtree(folder.staging, ignore_errors=True)
        return None
    facts = {"architecture": streamed.architecture, "model_type": streamed.model_type,
             "num_parameters": streamed.num_parameters, "dtype": streamed.dtype}
    return _Pruned(streamed.record, streamed.files, facts, "streamed from safetensors, one tensor at a time (cpu)")


def _prune_loaded(settings: RunSettings, options: _Fetch, source: ResolvedSource, weights_dir: Path,
                  folder: RunFolder) -> _Pruned:
    """Load the model (one device or a device map), prune it in place, save it."""
    model, tokenizer = load_model(source, weights_dir, settings, offload_dir=folder.offload)
    saved_as = saved_weight_names(model, [layer.weight_name for layer in prunable_matrices(model)])
    calibration = None
    if get_method(settings.method).needs_calibration:
        calibration = load_calibration(tokenizer, CalibrationSpec(
            settings.calibration_dataset, samples=settings.calibration_samples,
            seq_len=settings.calibration_seq_len, seed=settings.seed, revision=settings.calibration_revision))
    pruning = prune_model(model, _request(settings, calibration), progress=options.progress)
    pruning.calibration = dataclasses.asdict(calibration.record) if calibration else None
    names = save_checkpoint(model, tokenizer, folder.staging, shard_size=settings.shard_size)
    pruning.layers = [dataclasses.replace(layer, name=saved_as[layer.name]) for layer in pruning.layers]
    facts = {"architecture": type(model).__name__, "model_type": model.config.model_type,
             "num_parameters": model.num_parameters(), "dtype": str(model.dtype).removeprefix("torch.")}
    return _Pruned(pruning, names, facts, describe_placement(model))
