"""Masks from scores: exact-k (hits the target exactly) and the study's ≤-threshold rule.

A mask is a bool tensor shaped like the scores; True marks a weight to zero.

    >>> zero_smallest_magnitude_(weight, k=weight.numel() // 2)    # magnitude pruning in place, no mask built
    >>> mask = magnitude_mask(weight, k=weight.numel() // 2)       # the same selection, as a mask (by |weight|)
    >>> zero_masked_(weight, mask)                                 # = weight.masked_fill_(mask, 0), faster
    >>> mask = lowest_k_mask(scores, k=scores.numel() // 2)        # by the scores' values

How the k-th smallest |w| is found without sorting (bf16, fp16, fp32): for IEEE floats with the sign bit
cleared, the order of the bit patterns read as integers is the order of the values, so |w| ranks like
`bits & 0x7FFF` (16-bit floats, viewed as int16) or `bits & 0x7FFFFFFF` (fp32, viewed as int32).
- Pass 1: `bincount` of the top 16 bits with the sign dropped (2^15 buckets); its cumulative sum gives the
  bucket holding the k-th smallest |w| and how many entries lie below it. For 16-bit floats a bucket is one
  value, so that is the exact threshold; for fp32 the entries of that one bucket are ranked afterwards by
  their low 16 bits (a second, small `bincount`).
- Pass 2, `magnitude_mask` and fp32: one comparison per entry gives the prune flags, written to the mask
  or applied in place (bits -= bits · flag).
- Pass 2, `zero_smallest_magnitude_` on bf16/fp16: `torch.hardshrink(w, λ, out=w)` with λ = the k-th
  smallest |w| as a Python float (exact: a 16-bit bucket is one value): it zeroes |w| ≤ λ, writes +0.0
  and leaves every other entry's bits alone. Exact-k with ties to split: shrink at λ up to the need-th tie
  (found in its one chunk by `_nth_equal`) and at the next smaller value (strictly below) after it.
  hardshrink keeps NaN but, computing in float, rewrites a bf16 -NaN as +NaN; pass 1 shows whether any NaN
  exists, and then the comparison pass runs instead.
Pass 1 goes chunk by chunk (2^20 entries) with the int16 key in one reused cache-sized buffer, so no
full-size temporary is allocated, on one intra-op thread (see `_one_cpu_thread`). Measured on one core of
a shared AMD EPYC (bf16 5632×2048, k = n/2): `clone()` 1.7-2.0 ms; pass 1 9-10 ms (`bincount` itself ~7:
a scalar scatter loop after a min and a max pass); pass 2 2.5 ms (threshold) / 2.9 ms (exact; the
comparison pass took 2.8-3.4 / 4.5-5.3); in all ~12 ms, ~6× a clone, against ~280 ms with `kthvalue` and
~850 ms with a full sort. Tried and dropped: counting |w| < t exactly at a few thresholds bracketed by a
sample (one `lt` into int16 plus a packed int64 sum is ~1.2 ms per threshold, so pinning one bucket out
of the 3-5 a 10^6-entry sample leaves open costs as much as the bincount). Other dtypes (float64,
integers) fall back to `kthvalue`.

Ties at the threshold: `ties="exact"` marks the first ones by position (flat row-major index) until k is
reached, the same set the kthvalue version marked; the histogram is kept per chunk, so positions are
searched in the one chunk where the k-th entry falls. +0 and -0 tie (same |w|).

NaN: a NaN's pattern with the sign cleared lies above +inf's, so NaN ranks as the largest magnitude: it is
pruned only when k exceeds the number of non-NaN entries (`sort` and `kthvalue` also put NaN last).

On a GPU (`_SORT_DEVICES`) the same selection is one stable radix sort of the sign-cleared patterns: exact-k
zeroes the first k positions of the sorted order (stable, so ties go by position: the same set as above),
the threshold rule every pattern ≤ the k-th. Measured on an H200 (bf16 5632×2048): the sort 0.33 ms, the
2^15-bucket `bincount` alone 1.4 ms (global atomics, contended where |w| crowds a few hundred buckets),
and each host sync 0.03 ms, so the histogram path took 2.4-2.6 ms against a 0.023 ms `clone()`. Tried and
dropped there: the histogram path as four fused Triton kernels (two 256-bin `tl.histogram` passes, a select,
a masked write; bit for bit the CPU's masks): 0.28 ms per matrix with the zero count read back (0.21 ms of
kernels; `tl.histogram` alone 0.06-0.08 ms a pass) against a 0.029 ms clone; bench_accelerator's 56 matrices
in 10.2 ms, against 20 ms for this sort and 15.1 ms for the study's full sort. Saving ~0.2 s on a 9B model
did not pay for kernels that compile on first use and that CI (no GPU, no Triton) cannot run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import torch

TIES = ("exact", "threshold")

_BUCKETS = 1 << 15  # values of the top 16 bits of a float with the sign dropped
_CHUNK = 1 << 20  # entries per chunk: the key buffer stays in cache; ties are searched in one chunk only
_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
_NAN_KEY = {torch.bfloat16: 0x7F81, torch.float16: 0x7C01}  # the smallest NaN pattern with the sign cleared
_SIGN_CLEARED = {torch.int16: 0x7FFF, torch.int32: 0x7FFFFFFF}
_SORT_DEVICES = frozenset({"cuda"})  # where a radix sort beats the histogram (module doc)


def magnitude_mask(weight: torch.Tensor, k: int, ties: str = "exact") -> torch.Tensor:
    """Mark the k entries of `weight` with the smallest absolute value; pass the weight itself, not |weight|.

    Same contract as `lowest_k_mask(weight.abs(), k, ties)`, without the abs() pass: a bool mask shaped like
    `weight`, True = prune; k <= 0 marks none, k >= numel marks all. `ties="exact"` marks exactly k entries
    (ties at the k-th |w| broken by position, first ones marked); `ties="threshold"` marks every entry with
    |w| ≤ the k-th smallest |w|, which in bf16 often exceeds k (the study's behaviour: 50 % target → ~50.11 %
    actual on gemma-2-9b-it). NaN counts as the largest magnitude (see the module doc).
    """
    _check_ties(ties)
    if k <= 0 or k >= weight.numel():
        return torch.full(weight.shape, k > 0, dtype=torch.bool, device=weight.device)
    bits = _bit_view(weight.contiguous())
    if bits is None:
        return _kthvalue_mask(weight.abs(), k, ties)
    mask = torch.empty(bits.shape, dtype=torch.int8, device=weight.device)  # 0/1, viewed as bool at the end
    if bits.device.type in _SORT_DEVICES:
        _sort_select(bits, k, ties, mask)
        return mask.view(torch.bool).view(weight.shape)
    with _one_cpu_thread(weight.device):
        _select_smallest(bits, k, ties, mask)
    return mask.view(torch.bool).view(weight.shape)


def zero_smallest_magnitude_(weight: torch.Tensor, k: int, ties: str = "exact") -> torch.Tensor:
    """Magnitude pruning in place: zero the entries `magnitude_mask(weight, k, ties)` marks; returns `weight`.

    Builds no mask: bf16/fp16 are shrunk in place at the k-th |w| (`hardshrink`, see the module doc), fp32
    and NaN-holding tensors get each chunk's flags applied to their bits right away. Zeroed entries become
    +0.0, as `masked_fill_` writes; every other entry keeps its bits (-0.0 and NaN included).
    """
    prune_smallest_magnitude_(weight, k, ties)
    return weight


def prune_smallest_magnitude_(weight: torch.Tensor, k: int, ties: str = "exact") -> int | None:
    """`zero_smallest_magnitude_`, returning how many entries are zero afterwards when pass 1 tells (else None).

    bf16/fp16 without NaN: ±0 entries are the smallest magnitudes, so exact-k leaves max(k, zeros before)
    zeros and the threshold rule every entry up to the threshold bucket — no counting pass needed.
    """
    _check_ties(ties)
    bits = _bit_view(weight) if weight.is_contiguous() else None
    if bits is None or k <= 0 or k >= weight.numel():
        zero_masked_(weight, magnitude_mask(weight, k, ties))
        return None
    if bits.device.type in _SORT_DEVICES:
        return _sort_select(bits, k, ties, None)
    with _one_cpu_thread(weight.device):
        histogram = _histogram(bits)
        if bits.dtype == torch.int16 and _shrink_smallest_16(bits, weight.dtype, k, ties, histogram):
            counts = histogram.sum(0)
            if ties == "threshold":
                return int(counts[: _locate(counts, k)[0] + 1].sum())
            return max(k, int(counts[0]))
        _select_smallest(bits, k, ties, None, histogram)
    return None


def lowest_k_mask(scores: torch.Tensor, k: int, ties: str = "exact") -> torch.Tensor:
    """Mark the k lowest scores.

    `ties="exact"` marks exactly k entries (ties at the k-th value broken by position);
    `ties="threshold"` marks every entry ≤ the k-th smallest value, which in bf16 often exceeds k
    (the study's behaviour: 50 % target → ~50.11 % actual on gemma-2-9b-it).

    Non-negative bf16/fp16/fp32 scores (the usual case: |w|, |w|·‖x‖) take the histogram path of
    `magnitude_mask` (for them |s| = s); scores with negative values, and other dtypes, use `kthvalue`
    (a selection, O(n)) instead of a full sort. For magnitude pruning call `magnitude_mask(weight, ...)`
    or `zero_smallest_magnitude_`, which skip both the abs() pass and the sign check here.
    """
    _check_ties(ties)
    if scores.dtype in (torch.bfloat16, torch.float16, torch.float32) and not bool((scores < 0).any()):
        return magnitude_mask(scores, k, ties)
    return _kthvalue_mask(scores, k, ties)


def zero_masked_(tensor: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`tensor.masked_fill_(mask, 0)`, ~5× faster on CPU for floating tensors; returns `tensor`.

    On CPU it works on the bit patterns viewed as integers of the same width (bits -= bits · mask): entries
    outside the mask keep their exact bits (NaN and inf included), masked ones become +0.0, as masked_fill_
    writes. Elsewhere it is masked_fill_.
    """
    if tensor.device.type != "cpu" or not tensor.is_floating_point() or tensor.element_size() not in _SAME_WIDTH_INT:
        return tensor.masked_fill_(mask, 0)
    bits = tensor.view(_SAME_WIDTH_INT[tensor.element_size()])
    bits.addcmul_(bits, mask, value=-1)  # exact in integers
    return tensor


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {TIES}, not {ties!r}")


@contextlib.contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """Run the selection's ops on one intra-op thread (process-wide while it runs, then restored).

    Its ~60 ops per matrix are short and memory-bound; bincount, the longest, is single-threaded anyway.
    With OpenMP each op is a fork/join, and on a busy machine a join can wait a whole scheduler slice for
    a descheduled worker: on 2 shared, busy cores the 70 matrices of a 645 M model took 2-40 s with 2
    threads and 0.65-1.1 s with one; on the same cores idle one thread was no slower (0.65-0.9 s against
    0.7-1.1 s). Many cores would want matrices in parallel instead (bincount releases the GIL).
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _bit_view(weight: torch.Tensor) -> torch.Tensor | None:
    """Flat int16 (bf16/fp16) or int32 (fp32) view of a contiguous tensor; None for the kthvalue path."""
    if weight.device.type not in ("cpu", "cuda"):  # int16 bincount etc. are not everywhere (MPS): kthvalue
        return None
    if weight.dtype in (torch.bfloat16, torch.float16):
        return weight.view(-1).view(torch.int16)
    if weight.dtype == torch.float32 and sys.byteorder == "little":  # _top_key reads the high half
        return weight.view(-1).view(torch.int32)
    return None


def _top_key(bits: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The top 16 bits of each float with the sign dropped, as int16 in [0, 2^15): |w|'s rank, coarsened."""
    if bits.dtype == torch.int32:  # little-endian: the odd int16 of each int32 is its high half
        bits = bits.view(torch.int16)[1::2]
    return torch.bitwise_and(bits, 0x7FFF, out=out[: bits.numel()])


def _locate(counts: torch.Tensor, k: int) -> tuple[int, int]:
    """The bucket holding the k-th smallest entry (1-based k) and how many of its entries are needed."""
    cumulative = counts.cumsum(0)
    bucket = int(torch.searchsorted(cumulative, k))  # first bucket whose cumulative count reaches k
    return bucket, k - (int(cumulative[bucket - 1]) if bucket else 0)


def _histogram(bits: torch.Tensor) -> torch.Tensor:
    """Pass 1: per chunk of `_CHUNK` entries, the `bincount` of the top-16-bit key (chunks × 2^15, int64)."""
    key_buffer = torch.empty(min(bits.numel(), _CHUNK), dtype=torch.int16, device=bits.device)
    return torch.stack([torch.bincount(_top_key(c, key_buffer), minlength=_BUCKETS) for c in bits.split(_CHUNK)])


def _shrink_smallest_16(bits: torch.Tensor, dtype: torch.dtype, k: int, ties: str, per_chunk: torch.Tensor) -> bool:
    """Pass 2 for bf16/fp16 in place (0 < k < numel): `hardshrink` at the k-th |w|; False if NaN is present.

    A 16-bit bucket is one value, so the k-th smallest |w| is a float `hardshrink` compares exactly: with
    λ = it, hardshrink zeroes |w| ≤ λ (the threshold rule) and writes +0.0, every other entry unchanged.
    For exact-k with ties to split, the entries up to the need-th tie (flat position, found in its one
    chunk) are shrunk at λ, the rest at the next smaller value (strictly below). NaN is not ≤ λ, so
    hardshrink keeps it, but as float it loses a bf16 NaN's sign: with any NaN the caller's compare path
    runs instead (bit-exact, NaN as the largest magnitude).
    """
    counts = per_chunk.sum(0)
    if bool(counts[_NAN_KEY[dtype]:].any()):
        return False
    bucket, need = _locate(counts, k)
    weight = bits.view(dtype)
    if ties == "threshold" or need == int(counts[bucket]):
        torch.hardshrink(weight, _key_value(bucket, dtype), out=weight)
        return True
    ties_through = per_chunk[:, bucket].cumsum(0)
    tie_chunk = int(torch.searchsorted(ties_through, need))  # the chunk holding the need-th tie
    rest = need - (int(ties_through[tie_chunk - 1]) if tie_chunk else 0)
    start = tie_chunk * _CHUNK
    chunk = bits[start : start + _CHUNK]
    last = start + _nth_equal(_top_key(chunk, torch.empty_like(chunk)), bucket, rest)  # flat index
    head, tail = weight[: last + 1], weight[last + 1 :]
    torch.hardshrink(head, _key_value(bucket, dtype), out=head)  # ties included: the first `need` of them
    if bucket > 0:  # bucket 0 is ±0: nothing lies strictly below it
        torch.hardshrink(tail, _key_value(bucket - 1, dtype), out=tail)
    return True


def _key_value(key: int, dtype: torch.dtype) -> float:
    """The non-negative float a 16-bit key stands for (exact as a Python float)."""
    return float(torch.tensor(key, dtype=torch.int16).view(dtype))


def _nth_equal(key: torch.Tensor, value: int, n: int) -> int:
    """Position of the n-th (1-based) entry equal to `value` in a 1-D int16 `key`, which it overwrites.

    Without a nonzero() over the whole chunk: 0/1 flags in place, counted by rows of 1024 (four flags per
    int64, so a row's sum holds four 16-bit partial counts that cannot carry into each other), then
    nonzero() in the one row where the n-th falls.
    """
    row = 1024
    flags = torch.eq(key, value, out=key)
    full = flags.numel() // row * row
    sums = flags[:full].view(torch.int64).view(-1, row // 4).sum(1).view(torch.int16).view(-1, 4).sum(1)
    if full < flags.numel():
        sums = torch.cat([sums, flags[full:].sum().view(1)])
    through = sums.cumsum(0)
    r = int(torch.searchsorted(through, n))
    before = int(through[r - 1]) if r else 0
    return r * row + int(torch.nonzero(flags[r * row : (r + 1) * row]).view(-1)[n - before - 1])


def _select_smallest(
    bits: torch.Tensor, k: int, ties: str, mask: torch.Tensor | None, per_chunk: torch.Tensor | None = None
) -> None:
    """Flag the k smallest |w| of a flat int16/int32 bit view (0 < k < numel), in two passes of chunks.

    With `mask` (flat int8) the flags go there (1 = prune); with None, each chunk's weights are zeroed in
    place as soon as its flags are known (bits -= bits · flag). `per_chunk`: pass 1's `_histogram`, if done.
    """
    chunks = list(bits.split(_CHUNK))
    key_buffer = torch.empty(min(bits.numel(), _CHUNK), dtype=torch.int16, device=bits.device)
    if per_chunk is None:
        per_chunk = _histogram(bits)
    counts = per_chunk.sum(0)
    bucket, need = _locate(counts, k)

    refine = bits.dtype == torch.int32  # fp32: a bucket spans many values; rank its entries after the pass
    if refine:
        le_before, tie_chunk, rest = 0, -1, 0  # every chunk: flag key < bucket
    elif ties == "threshold" or need == int(counts[bucket]):
        le_before, tie_chunk, rest = len(chunks), -1, 0  # every chunk: flag key ≤ bucket
    else:  # exact: all ties before chunk `tie_chunk`, its first `rest` ties, none after it
        ties_through = per_chunk[:, bucket].cumsum(0)
        tie_chunk = le_before = int(torch.searchsorted(ties_through, need))
        rest = need - (int(ties_through[tie_chunk - 1]) if tie_chunk else 0)

    flags = None if mask is not None else torch.empty_like(bits[:_CHUNK])
    candidates = []
    for i, chunk in enumerate(chunks):
        key = _top_key(chunk, key_buffer)
        if refine:
            candidates.append(torch.nonzero(key == bucket).view(-1) + i * _CHUNK)
        if i == tie_chunk:
            tied = torch.nonzero(key == bucket).view(-1)[:rest]
        out = mask[i * _CHUNK : i * _CHUNK + len(chunk)] if mask is not None else flags[: len(chunk)]
        (torch.le if i < le_before else torch.lt)(key, bucket, out=out)
        if i == tie_chunk:
            out[tied] = 1
        if mask is None:
            chunk.addcmul_(chunk, out, value=-1)
    if refine:
        chosen = _rank_bucket_32(bits, torch.cat(candidates), need, ties)
        if mask is not None:
            mask[chosen] = 1
        else:
            bits[chosen] = 0


def _sort_select(bits: torch.Tensor, k: int, ties: str, mask: torch.Tensor | None) -> int:
    """The GPU selection (0 < k < numel): flags into `mask` (flat int8), or with None zeroes `bits` in place.

    Returns how many entries are zero afterwards (in place) or flagged: ±0 sort first, so exact-k leaves
    max(k, zeros before) zeros; the threshold rule flags every pattern up to the k-th, zeros included.
    """
    key = torch.bitwise_and(bits, _SIGN_CLEARED[bits.dtype])
    values, order = torch.sort(key, stable=True)  # stable: equal |w| stay in position order
    target, flag = (bits, 0) if mask is None else (mask.zero_(), 1)
    if ties == "threshold":
        kth = values[k - 1 : k]
        target.masked_fill_(key <= kth, flag)
        return int(torch.searchsorted(values, kth, right=True))
    target[order[:k]] = flag
    if mask is not None:
        return k
    zeros_before = torch.searchsorted(values, torch.zeros(1, dtype=values.dtype, device=values.device), right=True)
    return max(k, int(zeros_before))


def _rank_bucket_32(bits: torch.Tensor, candidates: torch.Tensor, need: int, ties: str) -> torch.Tensor:
    """fp32: of the entries in the k-th bucket (positions, in order), those to prune, by their low 16 bits."""
    low = torch.bitwise_and(bits[candidates], 0xFFFF)
    threshold, low_need = _locate(torch.bincount(low, minlength=1 << 16), need)
    if ties == "threshold":
        return candidates[low <= threshold]
    return torch.cat([candidates[low < threshold], candidates[low == threshold][:low_need]])


def _kthvalue_mask(scores: torch.Tensor, k: int, ties: str) -> torch.Tensor:
    """The general path: `kthvalue` on a float copy (a selection, O(n), but ~20× slower than the histogram)."""
    flat = scores.reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    mask = torch.zeros(flat.shape, dtype=torch.bool, device=flat.device)
    if k <= 0:
        return mask.view_as(scores)
    if k >= flat.numel():
        return mask.fill_(True).view_as(scores)
    threshold = flat.kthvalue(k).values
    if ties == "threshold":
        return torch.le(flat, threshold, out=mask).view_as(scores)
    torch.lt(flat, threshold, out=mask)
    missing = k - int(mask.sum())
    if missing > 0:
        tied = torch.nonzero(flat == threshold).squeeze(1)[:missing]
        mask[tied] = True
    return mask.view_as(scores)
