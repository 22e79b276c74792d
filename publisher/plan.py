"""`publish-pruned plan`: what pruning a model would do, from its config alone (meta device, no weights).

    >>> p = plan_model("tests/fixtures/configs/gemma-2-9b-it", sparsity=0.5)
    >>> p.prunable_params
    8323596288
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ArchitectureError, ModelSourceError
from .plan_moe import moe_lines, moe_plan
from .prune import METHODS
from .prune.experts import experts_layout
from .prune.scope import ExpertMatrix, check_prunable_scope, prunable_matrices
from .prune.structure import parse_structure
from .settings import validate_repo_id

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Plan:
    model: str
    architecture: str
    dtype: str
    total_params: int
    prunable_params: int
    prunable_matrices: int
    matrix_kinds: dict[str, int]  # e.g. {"q_proj": 42, ...}
    sparsity: float
    structure: str
    expected_zeros: int
    weights_bytes: int
    largest_matrix: int
    memory_needed_bytes: int  # loaded: weights + the largest per-matrix working set of magnitude pruning
    streamed_memory_bytes: int  # magnitude/random streamed from safetensors: two tensors at a time
    methods: dict[str, str] = field(default_factory=dict)  # method → "ok" or why it does not apply
    unsupported: str | None = None  # why the model cannot be pruned at all (e.g. experts outside nn.Linear)
    moe: dict | None = None  # mixture-of-experts models: active parameters, prunable by kind (`plan_moe`)


def load_config(model: str, *, revision: str | None = None, endpoint: str | None = None, token: str | None = None,
                trust_remote_code: bool = False):
    """A model's config from a folder, a GGUF header or the Hub (config.json only).

    `trust_remote_code` is always passed as a bool: left None, transformers would ask on stdin whether to run
    the model's own code.
    """
    from transformers import AutoConfig

    path = Path(model).expanduser()
    trust = {"trust_remote_code": trust_remote_code}
    try:
        if path.suffix == ".gguf" and path.is_file():
            return AutoConfig.from_pretrained(path.parent, gguf_file=path.name, **trust)
        if path.is_dir():
            return AutoConfig.from_pretrained(path, **trust)
        from huggingface_hub import hf_hub_download

        validate_repo_id(model, what="--model")
        config_file = hf_hub_download(model, "config.json", revision=revision, endpoint=endpoint, token=token)
        return AutoConfig.from_pretrained(Path(config_file).parent, **trust)
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot read the config of {model}: {str(exc).splitlines()[0]}") from None


def plan_model(model: str, sparsity: float, *, structure: str = "unstructured", dtype: str = "auto",
               revision: str | None = None, endpoint: str | None = None, token: str | None = None) -> Plan:
    from transformers import AutoModelForCausalLM

    config = load_config(model, revision=revision, endpoint=endpoint, token=token)
    if dtype == "auto":
        dtype = str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or "float32")
        dtype = dtype.removeprefix("torch.")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    layers = prunable_matrices(skeleton)
    shape = parse_structure(structure)
    kinds: dict[str, int] = {}
    for layer in layers:
        kind = _kind_key(layer)
        kinds[kind] = kinds.get(kind, 0) + 1
    sizes = [layer.numel for layer in layers]
    total = sum(p.numel() for p in skeleton.parameters())
    bytes_per = DTYPE_BYTES.get(dtype, 4)
    largest = max(sizes)
    largest_tensor = _largest_saved_tensor(skeleton)
    methods = {}
    misfit = next((x.name for x in layers if not shape.fits(x.in_features)), None)
    moe = moe_plan(skeleton, layers, bytes_per=bytes_per) if any(isinstance(x, ExpertMatrix) for x in layers) \
        else None
    try:
        check_prunable_scope(skeleton)
        unsupported = None
    except ArchitectureError as error:
        unsupported = str(error)
    for name, method in sorted(METHODS.items()):
        if unsupported:
            methods[name] = "not supported"
        elif method.drops_experts:
            methods[name] = ("ok (needs calibration data; --experts-keep or --experts-keep-n)" if moe
                             else "not applicable (no mixture-of-experts layers)")
        elif misfit:
            methods[name] = f"{shape} does not fit {misfit} (in_features not divisible by {shape.m})"
        elif method.needs_calibration:
            methods[name] = "ok (needs calibration data)"
        else:
            methods[name] = "ok"
    return Plan(
        model=model, architecture=type(skeleton).__name__, dtype=dtype, total_params=total,
        prunable_params=sum(sizes), prunable_matrices=len(layers), matrix_kinds=kinds, sparsity=sparsity,
        structure=str(shape), expected_zeros=sum(math.floor(n * sparsity) for n in sizes),
        weights_bytes=total * bytes_per, largest_matrix=largest,
        # magnitude's working set: |w| as float32 scores + a bool mask for the largest matrix
        memory_needed_bytes=total * bytes_per + largest * 5, methods=methods,
        # two tensors in memory at a time: one being written, the next being read and pruned
        streamed_memory_bytes=2 * largest_tensor * bytes_per, unsupported=unsupported, moe=moe,
    )


def _kind_key(layer) -> str:
    """A matrix kind for the counts: the linear's name (q_proj), `experts.gate_proj` for a routed expert's."""
    if isinstance(layer, ExpertMatrix):
        return f"experts.{layer.part}_proj"
    parts = layer.name.rsplit(".", 2)
    return ".".join(parts[-2:]) if "shared_expert" in parts[-2] else parts[-1]


def _largest_saved_tensor(skeleton) -> int:
    """Entries of the largest tensor the files hold: an MoE's files hold one matrix per expert, not the 3-D
    parameter transformers builds (streaming reads one of those at a time)."""
    largest = 0
    for module in skeleton.modules():
        layout = experts_layout(module)
        for name, param in module.named_parameters(recurse=False):
            if layout is None:
                largest = max(largest, param.numel())
            else:  # gate_up_proj holds two matrices per expert
                parts = next(len(p) for n, p in layout if n == name)
                largest = max(largest, param[0].numel() // parts)
    return largest


def plan_table(plan: Plan) -> str:
    gib = 1024**3
    lines = [
        f"{plan.model} ({plan.architecture}, {plan.dtype})",
        f"  parameters          {plan.total_params:,}",
        f"  prunable            {plan.prunable_params:,} in {plan.prunable_matrices} matrices "
        f"({', '.join(f'{k} ×{v}' for k, v in plan.matrix_kinds.items())})",
        f"  expected zeros      {plan.expected_zeros:,} at {plan.sparsity:.0%} ({plan.structure}, exact-k)",
        f"  weights             {plan.weights_bytes / gib:.2f} GiB; memory needed ≈ "
        f"{plan.memory_needed_bytes / gib:.2f} GiB loaded (+ calibration working set for Wanda/SparseGPT), "
        f"≈ {plan.streamed_memory_bytes / gib:.2f} GiB streamed (magnitude/random on safetensors, CPU) + libraries",
        "  methods             " + "; ".join(f"{k}: {v}" for k, v in plan.methods.items()),
    ]
    if plan.moe:
        lines[2:2] = moe_lines(plan.moe)
    if plan.unsupported:
        lines.append(f"  not supported       {plan.unsupported}")
    return "\n".join(lines)
