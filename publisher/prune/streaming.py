"""Per-matrix pruning (magnitude, random) streamed from the base model's safetensors to the run's files.

Loading the whole model to zero some of its weights costs the model's size in memory; a per-matrix method
needs one matrix at a time. So when the checkpoint is plain safetensors whose tensor names are the model's
own, each tensor is read, cast, pruned if prunable, and written to the new shards, the next one being read
and pruned while this one is written: peak memory is about two of the largest tensor plus the libraries.

    >>> streamed = stream_prune(Path("base"), Path("staging"), request, dtype="auto", shard_size="5GB")
    >>> streamed.record.layers[0].zeros, streamed.files

The saved weights equal those of load → `prune_model` → `save_pretrained` (tests compare them tensor by
tensor); anything this path cannot reproduce exactly raises `NotStreamable` and the pipeline loads the
model instead: tensors transformers renames or converts at load, mixed dtypes, modules kept in fp32.

Mixture-of-experts checkpoints stream too: their files hold one tensor per expert and projection (which
transformers fuses into 3-D parameters at load and splits again at save), so each expert's gate, up and down
matrix is read, pruned and written on its own (`moe_layout.saved_layout` says which saved tensor is which
expert matrix) — a 30B MoE prunes with one tensor in memory.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from ..base_files import list_files
from ..config_compat import write_compatible_config
from ..results import LayerSparsity, PruneRecord
from ..safetensors_io import SafetensorsError, SafetensorsFile, TensorEntry, plan_shards, write_shards
from . import PruneRequest, check_request, get_method, prune_record
from .experts import has_experts, moe_facts
from .moe_layout import LayoutError, saved_layout
from .scope import prunable_matrices, scope_description
from .sparsity import weight_locations, zeros_in

if TYPE_CHECKING:
    from transformers import PretrainedConfig


class NotStreamable(Exception):
    """This checkpoint or request needs the loaded model; the message says why (logged, not an error)."""


@dataclass
class StreamedPrune:
    record: PruneRecord
    files: list[str]  # paths written into the output folder, relative to it, sorted
    architecture: str
    model_type: str
    num_parameters: int
    dtype: str


def stream_prune(source: Path, out: Path, request: PruneRequest, *, dtype: str, shard_size: str,
                 trust_remote_code: bool = False, progress: bool = True) -> StreamedPrune:
    """Prune `source`'s safetensors into `out` one tensor at a time, plus config, generation config, tokenizer
    (chat templates included; config.json with RoPE also at the top level, as `save_checkpoint` writes it)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    method = get_method(request.method)
    if method.matrix_pruner is None:
        raise NotStreamable(f"{method.name} needs the model's forward pass")
    if not (source / "generation_config.json").is_file():
        raise NotStreamable("no generation_config.json: transformers derives one while loading")
    remote = {"trust_remote_code": trust_remote_code}  # never None: None makes transformers ask on stdin
    try:
        config = AutoConfig.from_pretrained(source, **remote)
        tokenizer = AutoTokenizer.from_pretrained(source, **remote)
    except (OSError, ValueError, KeyError) as exc:  # the load path reports these properly
        raise NotStreamable(f"config or tokenizer not readable on their own ({type(exc).__name__})") from None
    if any(key.startswith("AutoModel") for key in getattr(config, "auto_map", None) or {}):
        raise NotStreamable("save_pretrained copies the model's own code (auto_map) beside the weights")

    with contextlib.ExitStack() as stack:
        try:
            files = [stack.enter_context(SafetensorsFile(source / name))
                     for name in sorted({*weight_locations(source).values()})]
        except (OSError, SafetensorsError) as exc:  # missing shard, LFS pointer, unknown dtype: the load path says
            raise NotStreamable(str(exc)) from None
        stored = {name: file for file in files for name in file.tensors}  # tensor name → its file
        target = _target_dtype([file.tensors[name].dtype for name, file in stored.items()], config, dtype)
        try:
            # transformers casts every loaded tensor to the dtype the model gives it (built in the target
            # dtype; buffers a model creates with an explicit dtype keep it): that is the dtype it saves.
            with torch.device("meta"):
                skeleton = AutoModelForCausalLM.from_config(config, dtype=target, **remote)
        except (OSError, ValueError, KeyError) as exc:
            raise NotStreamable(f"the model cannot be built from its config alone ({type(exc).__name__})") from None
        if getattr(skeleton, "_keep_in_fp32_modules", None) or getattr(skeleton, "_keep_in_fp32_modules_strict",
                                                                       None):
            raise NotStreamable(f"{type(skeleton).__name__} keeps some modules in float32")
        layers = prunable_matrices(skeleton)
        check_request(skeleton, request, layers)
        if has_experts(skeleton):
            entries, model_name = _moe_entries_like_save_pretrained(skeleton, stored)
        else:
            entries, model_name = _entries_like_save_pretrained(skeleton, stored), {}
        saved_name = {model: saved for saved, model in model_name.items()}
        shards = plan_shards(sorted(entries, key=lambda e: _save_order(e.name)), shard_size)
        prunable = {saved_name.get(layer.weight_name, layer.weight_name) for layer in layers}
        pruner = method.matrix_pruner(request)
        counts: dict[str, LayerSparsity] = {}
        elapsed = 0.0
        with tqdm(total=len(layers), desc=f"{method.name} pruning (streamed)", unit="layer",
                  disable=not progress) as bar:

            def produce(entry: TensorEntry) -> torch.Tensor:
                nonlocal elapsed
                tensor = stored[entry.name].read(entry.name).to(entry.dtype)
                if entry.name in prunable:
                    start = time.perf_counter()
                    # the name the loaded path prunes it under (random masks are seeded from it)
                    zeros = pruner(model_name.get(entry.name, entry.name), tensor)
                    elapsed += time.perf_counter() - start
                    # The sparsity stage recounts from the written files either way.
                    counts[entry.name] = LayerSparsity(entry.name, list(entry.shape), tensor.numel(),
                                                       zeros_in(tensor) if zeros is None else zeros)
                    bar.update(1)
                return tensor

            write_shards(out, shards, produce)

    config.dtype = target
    config.architectures = [type(skeleton).__name__]  # as save_pretrained writes it
    config.save_pretrained(out)
    write_compatible_config(out)
    GenerationConfig.from_pretrained(source).save_pretrained(out)
    tokenizer.save_pretrained(out)
    record = prune_record(request, elapsed, [counts[saved_name.get(x.weight_name, x.weight_name)] for x in layers],
                          scope=scope_description(skeleton), moe=moe_facts(skeleton))
    return StreamedPrune(record=record, files=list_files(out),
                         architecture=type(skeleton).__name__, model_type=config.model_type,
                         num_parameters=skeleton.num_parameters(), dtype=str(target).removeprefix("torch."))


def _entries_like_save_pretrained(skeleton: torch.nn.Module, stored: dict[str, SafetensorsFile]) -> list[TensorEntry]:
    """What `save_pretrained` would write after loading these files into `skeleton` (built in the target
    dtype): names, dtypes, shapes, in model order.

    Raises NotStreamable where loading would change the tensors: names transformers renames, weights it
    would initialise, tied weights stored twice, shapes it would reshape.
    """
    saved = skeleton.state_dict()  # names and dtypes as the model has them
    own_names = list(saved)
    foreign = next((n for n in stored if n not in set(own_names)), None)
    if foreign is not None:
        raise NotStreamable(f"checkpoint tensor {foreign} is renamed or converted when transformers loads it")
    tied = _tied_duplicates(skeleton)
    twice = next((n for n in tied if n in stored), None)
    if twice is not None:  # the load path ties it to its twin and saves one copy
        raise NotStreamable(f"the checkpoint stores tied weight {twice} separately")
    absent = next((n for n in own_names if n not in stored and n not in tied), None)
    if absent is not None:
        raise NotStreamable(f"the checkpoint lacks {absent}, which transformers would initialise and save")
    kept = {name: file.tensors[name] for name, file in stored.items()}
    entries = [TensorEntry(n, saved[n].dtype, kept[n].shape) for n in own_names if n in kept]
    if any(e.shape != tuple(saved[e.name].shape) for e in entries):
        raise NotStreamable("a stored tensor's shape differs from the model's (transformers would reshape it)")
    return entries


def _moe_entries_like_save_pretrained(skeleton: torch.nn.Module, stored: dict[str, SafetensorsFile]
                                      ) -> tuple[list[TensorEntry], dict[str, str]]:
    """A mixture-of-experts model's saved tensors (per expert, as `save_pretrained` splits them) and, for each
    saved name, the name the tool prunes it under (an expert matrix's record name; else the state-dict key).

    Raises NotStreamable unless the files hold exactly those tensors with those shapes (a checkpoint stored
    fused, or one transformers would convert otherwise, loads instead)."""
    saved = skeleton.state_dict()
    tied = _tied_duplicates(skeleton)
    try:
        layout = saved_layout(skeleton, [name for name in saved if name not in tied])
    except LayoutError as why:
        raise NotStreamable(str(why)) from None
    extra = next((n for n in stored if n not in layout), None)
    if extra is not None:
        raise NotStreamable(f"checkpoint tensor {extra} is not one transformers would save for this model")
    absent = next((n for n in layout if n not in stored), None)
    if absent is not None:
        raise NotStreamable(f"the checkpoint lacks {absent}, which transformers would initialise and save")
    entries = [TensorEntry(n, saved[piece.source].dtype, stored[n].tensors[n].shape) for n, piece in layout.items()]
    if any(e.shape != layout[e.name].shape for e in entries):
        raise NotStreamable("a stored tensor's shape differs from the model's (transformers would reshape it)")
    return entries, {n: piece.model_name for n, piece in layout.items()}


def _tied_duplicates(model: torch.nn.Module) -> set[str]:
    """Names of tensors that are the same object as an earlier one (tied weights: saved once, under the first)."""
    seen: set[int] = set()
    duplicates = set()
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if id(tensor) in seen:
            duplicates.add(name)
        seen.add(id(tensor))
    return duplicates


def _save_order(name: str) -> tuple:
    """The order `save_pretrained` shards a state dict in (transformers 5 sorts it by this key first)."""
    try:
        from transformers.core_model_loading import dot_natural_key
    except ImportError:  # another transformers: any order makes valid shards, only the split may differ
        return ()
    return dot_natural_key(name)


def _target_dtype(stored: list[torch.dtype], config: PretrainedConfig, dtype: str) -> torch.dtype:
    """The dtype the load path would give every floating tensor (`auto`: the config's, else the files')."""
    floating = {d for d in stored if d.is_floating_point}
    if len(floating) > 1:
        raise NotStreamable(f"the checkpoint mixes floating dtypes ({', '.join(sorted(map(str, floating)))})")
    if dtype != "auto":
        return getattr(torch, dtype)
    declared = getattr(config, "dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared.removeprefix("torch."), None)
    return declared if isinstance(declared, torch.dtype) else (floating.pop() if floating else torch.float32)
