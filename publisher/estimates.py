"""Rough time of each stage of a run on a device, for `plan`: measured anchors scaled by parameter count.

    >>> for stage in estimate_stages(total_params=9_241_705_984, prunable_params=8_323_596_288, device="cuda",
    ...                              gpu_name="NVIDIA H200"):
    ...     print(stage.stage, round(stage.seconds))

Every figure starts from a measurement of the tool itself (`ANCHORS`: where and on what each was measured) and
scales linearly with the model's parameters — decoding and forward passes are bound by reading the weights, so
this holds to within a factor of about two across sizes; the work per run follows the protocol's sizes (128 x 2048
calibration tokens, 256 x 512 perplexity tokens, 12,148 BBQ items x 5 seeds, for the pruned model and the dense one).
They are estimates to plan a machine with, not measurements: the card never shows them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .measure.latency import MLX_CPU_MAX_PARAMS

if TYPE_CHECKING:
    from .plan import Plan

STUDY_ITEMS = 12_148  # BBQ ambiguous items of the study's five categories
SEEDS = 5
PPL_TOKENS = 256 * 512
CALIBRATION_TOKENS = 128 * 2048


@dataclass(frozen=True)
class Anchor:
    """Throughputs measured with the tool on one machine, for a model of `params` parameters."""

    machine: str
    params: int
    srs_replies_per_s: float  # at the default (auto) batch size, decoded in float32 where it fits
    ppl_tokens_per_s: float
    magnitude_weights_per_s: float  # prunable weights per second of the prune stage
    wanda_s_per_token: float  # calibration seconds per calibration token (block-by-block forwards + scoring)
    sparsegpt_s_per_token: float
    latency_s_per_item: float  # one 5-token generation
    source: str


# H200 figures: the table of issue 18 (an earlier session's measurement with the tool's own functions on one H200, on a
# gemma-2-9b-it-shaped model: 8.5 B parameters, random bf16 weights, 49k vocabulary; SRS 615 replies/s at batch 128,
# perplexity 112 x 512 in 5.05 s, magnitude 8.32 B weights in 0.65 s, Wanda / SparseGPT 32 x 2048 in 9.2 / 142.6 s).
# bench/gpu_check.py measures the same stages again where a GPU is lent; the latency anchor is a guess (0.06 s).
# CPU figures: SmolLM2-135M on the 2-core dev machine (README benchmarks and bench/bench_eval_batch.py).
ANCHORS = {
    "H200": Anchor("NVIDIA H200", 8_500_000_000, srs_replies_per_s=615.0, ppl_tokens_per_s=112 * 512 / 5.05,
                   magnitude_weights_per_s=8.32e9 / 0.65, wanda_s_per_token=9.2 / (32 * 2048),
                   sparsegpt_s_per_token=142.6 / (32 * 2048), latency_s_per_item=0.06,
                   source="gemma-2-9b-it shape on one H200 (issue 18)"),
    "CPU": Anchor("2-core CPU", 134_515_008, srs_replies_per_s=12.0, ppl_tokens_per_s=370.0,
                  magnitude_weights_per_s=1.06e8 / 0.36, wanda_s_per_token=71.8 / (32 * 512),
                  sparsegpt_s_per_token=134.5 / (32 * 512), latency_s_per_item=6.0,
                  source="SmolLM2-135M on the 2-core dev CPU"),
}
# Memory bandwidth relative to an H200 (4.8 TB/s): decoding and small-batch forwards scale with it.
GPU_BANDWIDTH = {"H200": 1.0, "H100": 3.35 / 4.8, "A100": 2.0 / 4.8, "L40": 0.86 / 4.8, "A10": 0.6 / 4.8}


@dataclass
class StageEstimate:
    stage: str
    seconds: float
    note: str = ""


def _gpu_speed(gpu_name: str) -> tuple[float, str]:
    for key, ratio in GPU_BANDWIDTH.items():
        if key in gpu_name.upper():
            return ratio, f"{key} (memory bandwidth {ratio:.2f}x an H200)"
    return GPU_BANDWIDTH["H100"], "an unknown GPU, taken as an H100"


def estimate_stages(*, total_params: int, prunable_params: int, device: str, gpu_name: str = "",
                    cpu_cores: int = 2, method: str = "magnitude") -> tuple[list[StageEstimate], str]:
    """(stages with estimated seconds, what the estimate is scaled from); no stage for MPS (untested)."""
    if device.startswith("cuda"):
        anchor, (speed, what) = ANCHORS["H200"], _gpu_speed(gpu_name)
    elif device == "cpu":
        anchor, speed = ANCHORS["CPU"], max(cpu_cores, 1) / 2  # the anchor's 2 cores; roughly linear in cores
        what = f"{cpu_cores} CPU cores"
    else:
        return [], f"no estimate for {device} (untested)"
    scale = total_params / anchor.params / speed  # seconds scale with parameters, inversely with device speed
    prune = {"magnitude": prunable_params / anchor.magnitude_weights_per_s / speed,
             "random": prunable_params / anchor.magnitude_weights_per_s / speed,
             "wanda": CALIBRATION_TOKENS * anchor.wanda_s_per_token * scale,
             "sparsegpt": CALIBRATION_TOKENS * anchor.sparsegpt_s_per_token * scale}.get(method)
    stages = []
    if prune is not None:
        stages.append(StageEstimate(f"prune ({method})", prune,
                                    "128 x 2048 calibration tokens" if method in ("wanda", "sparsegpt") else ""))
    stages += [
        StageEstimate("perplexity, pruned + dense", 2 * PPL_TOKENS / anchor.ppl_tokens_per_s * scale,
                      "256 x 512 tokens each"),
        StageEstimate("SRS on BBQ, pruned + dense", 2 * STUDY_ITEMS * SEEDS / anchor.srs_replies_per_s * scale,
                      f"{STUDY_ITEMS:,} items x {SEEDS} seeds each"),
    ]
    if device == "cpu" and total_params > MLX_CPU_MAX_PARAMS:
        stages.append(StageEstimate("latency", 0.0, "skipped: MLX on a CPU above 1 B parameters takes hours"))
    else:
        stages.append(StageEstimate("latency, 4 items x 2 models", 10 * anchor.latency_s_per_item * scale,
                                    "with one warm-up each"))
    return stages, f"scaled by parameters from {anchor.source}, for {what}"


def estimate_here(plan: Plan, device: str, method: str) -> tuple[list[StageEstimate], str]:
    """`estimate_stages` for a `plan.Plan` on `device` of this machine (its GPU's name, its CPU cores)."""
    import os

    import torch

    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else ""
    return estimate_stages(total_params=plan.total_params, prunable_params=plan.prunable_params, device=device,
                           gpu_name=gpu, cpu_cores=os.cpu_count() or 1, method=method)


def estimates_table(stages: list[StageEstimate], basis: str) -> str:
    if not stages:
        return f"  time estimate      {basis}"
    lines = [f"  time estimate      rough, {basis}; the dense baseline is cached after the first run"]
    for stage in stages:
        minutes = stage.seconds / 60
        shown = "—" if not stage.seconds else f"≈ {stage.seconds:.0f} s" if stage.seconds < 120 else (
            f"≈ {minutes:.0f} min" if minutes < 120 else f"≈ {minutes / 60:.1f} h")
        lines.append(f"    {stage.stage:<30} {shown}" + (f"  ({stage.note})" if stage.note else ""))
    total = sum(s.seconds for s in stages)
    lines.append(f"    {'total':<30} ≈ {total / 60:.0f} min" if total < 7200 else
                 f"    {'total':<30} ≈ {total / 3600:.1f} h")
    return "\n".join(lines)
