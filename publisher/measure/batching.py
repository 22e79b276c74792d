"""Evaluation batch sizes: sized to the device's free memory, confirmed by out-of-memory back-off.

    >>> size = auto_batch_size(model, per_item_bytes=srs_item_bytes(model, prompt_len=120, seeds=5,
    ...                        new_tokens=5, dtype_bytes=4), items=12148, kind="srs")
    >>> record = BatchRecord(requested="auto", start=size)
    >>> run_chunks(order, size, record, work)     # work(chunk) per chunk; an OOM halves the size and redoes it

`--eval-batch-size auto` (the default): on a CUDA GPU the largest power of two whose estimated memory — KV cache,
fp32 logits and the prefill's activations per prompt for SRS, activations per row for perplexity — fits in 80 % of
the memory free now, capped; on the CPU a fixed size measured fastest on a 2-core machine (bench/bench_eval_batch.py);
elsewhere 8. The estimate is then confirmed as the work runs: a chunk that runs out of memory (accelerate's
`should_reduce_batch_size` recognises the error on every backend) is redone at half the size, and every later chunk
uses the smaller size. Chunks already done are kept: in float32 a reply does not depend on its batch, so nothing is
lost or repeated. `BatchRecord` keeps what ran for results.json and the card.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import SettingsError

AUTO = "auto"
FREE_MEMORY_SHARE = 0.8  # of what the device reports free: the allocator's fragmentation and the model's own temps
CAPS = {"srs": 512, "ppl": 64}  # prompts (x seeds) / rows per batch; beyond these the GPU is saturated anyway
# Measured on the 2-core dev CPU with SmolLM2-135M in bfloat16 (bench/bench_eval_batch.py, best of 2 interleaved
# rounds): SRS 13.1 / 26.7 / 32.4 / 34.6 / 30.9 replies/s at 1 / 4 / 8 / 16 / 32 prompts x 5 seeds; perplexity
# 1,858 / 2,708 / 3,134 / 2,745 / 2,820 tokens/s at 1 / 4 / 8 / 16 / 32 rows of 256 tokens.
CPU_BATCH = {"srs": 16, "ppl": 8}
FALLBACK_BATCH = 8  # MPS (untested) and anything else without a free-memory reading


@dataclass
class BatchRecord:
    """What batch sizes an evaluation used: for results.json and the card's reproducibility section."""

    requested: str  # "auto" or the number given
    start: int  # the first size tried
    final: int = 0  # the size the last chunk ran at
    backoffs: list[int] = field(default_factory=list)  # sizes that ran out of memory, in order
    how: str = ""  # how `start` was chosen


def parse_batch_size(value: str | int) -> str | int:
    """`--eval-batch-size`: "auto" or a whole number ≥ 1 (SettingsError otherwise)."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif str(value).strip().lower() == AUTO:
        return AUTO
    else:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise SettingsError(f"--eval-batch-size must be auto or a whole number ≥ 1, got {value!r}") from None
    if number < 1:
        raise SettingsError(f"--eval-batch-size must be auto or a whole number ≥ 1, got {value!r}")
    return number


def _text_config(model: torch.nn.Module) -> Any:
    config = model.config
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def _width(config: Any, name: str, default: int = 0) -> int:
    return int(getattr(config, name, None) or default)


def srs_item_bytes(model: torch.nn.Module, *, prompt_len: int, seeds: int, new_tokens: int, dtype_bytes: int) -> int:
    """Memory one prompt adds to an SRS batch: its KV cache over all seeds, the fp32 logits and sampling CDF of its
    rows (float64), and the prefill's activations."""
    c = _text_config(model)
    hidden = _width(c, "hidden_size")
    heads = _width(c, "num_attention_heads", 1)
    head_dim = _width(c, "head_dim", hidden // heads)
    kv_heads = _width(c, "num_key_value_heads", heads)
    layers = _width(c, "num_hidden_layers", 1)
    vocab = _width(c, "vocab_size")
    intermediate = _width(c, "intermediate_size", 4 * hidden)
    tokens = prompt_len + new_tokens
    kv = 2 * layers * kv_heads * head_dim * tokens * dtype_bytes * seeds
    logits = vocab * (4 + 4 + 8) * seeds  # logits, softmax, float64 CDF
    prefill = prompt_len * (4 * hidden + 3 * intermediate + heads * prompt_len) * dtype_bytes
    return kv + logits + prefill


def ppl_row_bytes(model: torch.nn.Module, *, seq_len: int, dtype_bytes: int) -> int:
    """Memory one perplexity row adds: a layer's activations (the head is applied in slices of bounded size)."""
    c = _text_config(model)
    hidden = _width(c, "hidden_size")
    heads = _width(c, "num_attention_heads", 1)
    intermediate = _width(c, "intermediate_size", 4 * hidden)
    return seq_len * (6 * hidden + 3 * intermediate + heads * seq_len) * dtype_bytes + seq_len * 4


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def auto_batch_size(model: torch.nn.Module, *, per_item_bytes: int, items: int, kind: str) -> tuple[int, str]:
    """(batch size, how it was chosen) for `items` prompts (kind "srs") or rows (kind "ppl")."""
    device = _device(model)
    limit = max(1, min(CAPS[kind], items))
    if device.type == "cuda" and not getattr(model, "hf_device_map", None):
        free = torch.cuda.mem_get_info(device)[0]
        fits = int(free * FREE_MEMORY_SHARE // max(per_item_bytes, 1))
        size = 1 << max(0, min(fits, limit).bit_length() - 1)  # a power of two, at most what fits
        return size, (f"{torch.cuda.get_device_name(device)}: {free / 2**30:.1f} GiB free, about "
                      f"{per_item_bytes / 2**20:.1f} MiB per {'prompt' if kind == 'srs' else 'row'}")
    if device.type == "cpu":
        return min(CPU_BATCH[kind], limit), "the size measured fastest on a CPU"
    return min(FALLBACK_BATCH, limit), f"a fixed size on {device.type}"


def is_out_of_memory(error: BaseException) -> bool:
    """An out-of-memory error of any backend (torch's own type, or accelerate's recognised messages)."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(error, torch.OutOfMemoryError) or should_reduce_batch_size(error)


def release_memory(device: torch.device | None = None) -> None:
    """Give freed tensors' memory back (a deleted model, an out-of-memory batch), on a GPU too."""
    gc.collect()
    if (device is None or device.type == "cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_chunks(order: Sequence[int], size: int, record: BatchRecord, work: Callable[[list[int]], None],
               device: torch.device | None = None) -> None:
    """Call `work(chunk)` on consecutive chunks of `order` of `size`. A chunk that runs out of memory is redone at
    half the size, and every later chunk uses the smaller size; other errors propagate, as does running out of
    memory at size 1."""
    position = 0
    while position < len(order):
        chunk = list(order[position:position + size])
        try:
            work(chunk)
        except Exception as error:
            if not is_out_of_memory(error) or size == 1:
                raise
            record.backoffs.append(size)
            size //= 2
            release_memory(device or torch.device("cpu"))
            continue
        record.final = size
        position += len(chunk)

