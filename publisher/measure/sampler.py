"""Batched, seed-keyed sampling of a few new tokens: the same (seed, key) gives the same reply at any batch size.

    >>> config = SamplingConfig(temperature=0.3, max_new_tokens=5, seeds=(42, 123))
    >>> out = sample_continuations(model, [[1, 5, 9], [1, 7]], ["Age/ambig/0", "Age/ambig/2"], config,
    ...                            batch_size=8, pad_id=0, eos_ids={2})
    >>> out[0][1]          # item 0, seed 123: its new token ids (EOS not included)
    [330, 28]

Why not `model.generate`: its sampler draws from one global RNG, so a reply depends on what else is in the
batch. Here every (item, seed) row owns its random numbers: one uniform per step from numpy's PCG64 seeded
by sha256(seed, item key), turned into a token by inverse-CDF over the tempered distribution (the full vocabulary,
as the study sampled; optionally top-k-truncated): an exact draw from it.

Work done once: the prefix all prompts share (system turn, template, "Context:") is prefilled once and its KV
cache copied into every batch; each prompt's remaining tokens are prefilled once per item (padding sits between
the shared prefix and the item's tokens, masked, with explicit position ids) and the item's KV cache is then
expanded over the seeds; decoding runs items x seeds rows together, at most `max_new_tokens` steps, stopping
rows at EOS. Prompts are sorted by length before batching to limit padding.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from transformers import DynamicCache

from ..placement import input_device
from .batching import BatchRecord, run_chunks

STUDY_SEEDS = (42, 123, 456, 789, 1024)
MIN_SHARED_PREFIX = 8  # shorter shared prefixes are not worth a separate forward


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.3
    max_new_tokens: int = 5
    # None: the full vocabulary. The study sampled with mlx-lm's `make_sampler(temp=0.3)`, which truncates
    # nothing (its top_k and top_p are off unless given); transformers' top_k=50 default never applied.
    top_k: int | None = None
    seeds: tuple[int, ...] = STUDY_SEEDS


def batch_rule(batch_size: int) -> str:
    """How `sample_continuations` groups prompts into batches, in words for the record and the card."""
    return (f"prompts sorted by token length, longest first (ties in item order), {max(1, batch_size)} per batch; "
            "the shared prefix is computed once and padding between it and each prompt is masked")


def row_uniforms(seed: int, key: str, steps: int) -> np.ndarray:
    """`steps` uniforms in [0, 1) owned by (seed, key): independent of batch, order and platform."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words))).random(steps)


def sample_tokens(logits: torch.Tensor, uniforms: torch.Tensor, temperature: float,
                  top_k: int | None) -> torch.Tensor:
    """One token per row of `logits` [R, V], drawn by inverse CDF with the row's uniform [R].

    The full vocabulary (`top_k=None`) needs no sort: the CDF in vocabulary order (accumulated in float64, so the
    tail of a 256k vocabulary keeps its mass) is an exact draw as well.
    """
    logits = logits.float()
    if temperature <= 0:
        return logits.argmax(-1)
    if top_k is None or top_k >= logits.shape[-1]:
        values, indices = logits, None
    else:
        values, indices = logits.topk(top_k, dim=-1)  # sorted, highest first
    cdf = torch.softmax(values / temperature, dim=-1).double().cumsum(-1)
    targets = (uniforms.to(cdf) * cdf[:, -1]).unsqueeze(-1)
    pick = torch.searchsorted(cdf, targets, right=True).clamp(max=values.shape[-1] - 1)
    return (pick if indices is None else indices.gather(1, pick)).squeeze(-1)


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens shared by the start of every prompt, leaving at least one token of each prompt after it."""
    first, limit = prompts[0], min(len(p) for p in prompts) - 1
    length = 0
    while length < limit and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def _cache_kwarg(model: torch.nn.Module) -> str:
    """transformers 5 names the KV-cache argument `cache`; earlier versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


@dataclass
class _Prefix:
    """The KV cache of the prompt prefix every item shares (system turn, template, "Context:"), computed once."""

    length: int
    cache: DynamicCache | None


def _prefill_prefix(model: torch.nn.Module, prefix: Sequence[int]) -> _Prefix:
    if not prefix:
        return _Prefix(0, None)
    device = input_device(model)
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([list(prefix)], device=device), use_cache=True, logits_to_keep=1,
          **{_cache_kwarg(model): cache})
    return _Prefix(len(prefix), cache)


def _sample_batch(model: torch.nn.Module, suffixes: Sequence[Sequence[int]], keys: Sequence[str],
                  config: SamplingConfig, pad_id: int, eos: torch.Tensor, prefix: _Prefix) -> list[list[list[int]]]:
    """Prefill [prefix cache | padding | suffix] for each item, expand over seeds, then decode."""
    device = input_device(model)
    n_items, n_seeds, steps = len(suffixes), len(config.seeds), config.max_new_tokens
    width = max(len(s) for s in suffixes)
    ids = torch.full((n_items, width), pad_id, dtype=torch.long)
    real = torch.zeros((n_items, width), dtype=torch.long)
    for row, suffix in enumerate(suffixes):
        ids[row, width - len(suffix):] = torch.tensor(list(suffix), dtype=torch.long)
        real[row, width - len(suffix):] = 1
    positions = prefix.length + (real.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones((n_items, prefix.length), dtype=torch.long), real], dim=1)
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    if prefix.cache is not None:
        cache = copy.deepcopy(prefix.cache)
        cache.batch_repeat_interleave(n_items)
    else:
        cache = DynamicCache(config=model.config)
    cache_arg = {_cache_kwarg(model): cache}  # the cache is filled in place by every forward below
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **cache_arg)
    logits = out.logits[:, -1].repeat_interleave(n_seeds, dim=0)
    cache.batch_repeat_interleave(n_seeds)
    mask = mask.repeat_interleave(n_seeds, dim=0)
    position = positions[:, -1].repeat_interleave(n_seeds, dim=0)
    uniforms = torch.from_numpy(np.stack([row_uniforms(seed, key, steps) for key in keys for seed in config.seeds]))
    rows = n_items * n_seeds
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    generated: list[torch.Tensor] = []
    for step in range(steps):
        tokens = sample_tokens(logits, uniforms[:, step], config.temperature, config.top_k).to(device)
        tokens = torch.where(finished, torch.full_like(tokens, pad_id), tokens)
        generated.append(torch.where(finished, torch.full_like(tokens, -1), tokens))
        finished |= torch.isin(tokens, eos)
        if step == steps - 1 or bool(finished.all()):
            break
        mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
        position = position + 1
        out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=position[:, None], use_cache=True,
                    **cache_arg)
        logits = out.logits[:, -1]
    table = torch.stack(generated, dim=1).tolist()
    eos_set = set(eos.tolist())
    result: list[list[list[int]]] = []
    for item in range(n_items):
        per_seed = []
        for s in range(n_seeds):
            reply = []
            for token in table[item * n_seeds + s]:
                if token < 0 or token in eos_set:
                    break
                reply.append(token)
            per_seed.append(reply)
        result.append(per_seed)
    return result


@torch.inference_mode()
def sample_continuations(model: torch.nn.Module, prompts: Sequence[Sequence[int]], keys: Sequence[str],
                         config: SamplingConfig, *, batch_size: int = 8, pad_id: int = 0,
                         eos_ids: set[int] | frozenset[int] = frozenset(), share_prefix: bool = True,
                         progress: Callable[[int, int], None] | None = None,
                         record: BatchRecord | None = None) -> list[list[list[int]]]:
    """New token ids [item][seed] (EOS excluded); `batch_size` counts prompts per prefill (rows = x seeds).

    A batch that runs out of memory is redone at half the size (`batching.run_chunks`); `record` keeps the sizes.
    """
    if len(prompts) != len(keys):
        raise ValueError("one key per prompt")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be unique: they seed each item's random numbers")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("empty prompt")
    device = input_device(model)
    eos = torch.tensor(sorted(eos_ids) or [-2], dtype=torch.long, device=device)
    shared = common_prefix_length(prompts) if share_prefix else 0
    prefix = _prefill_prefix(model, prompts[0][:shared] if shared >= MIN_SHARED_PREFIX else [])
    order = sorted(range(len(prompts)), key=lambda i: (-len(prompts[i]), i))
    results: list[list[list[int]] | None] = [None] * len(prompts)
    done = 0

    def work(chunk: list[int]) -> None:
        nonlocal done
        batch = _sample_batch(model, [prompts[i][prefix.length:] for i in chunk], [keys[i] for i in chunk], config,
                              pad_id, eos, prefix)
        for index, replies in zip(chunk, batch, strict=True):
            results[index] = replies
        done += len(chunk)
        if progress is not None:
            progress(done, len(prompts))

    record = record if record is not None else BatchRecord(requested=str(batch_size), start=batch_size)
    run_chunks(order, max(1, batch_size), record, work, device)
    return results  # type: ignore[return-value]
