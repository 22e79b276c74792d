import math

import pytest
import torch

from publisher.prune import masks
from publisher.prune.masks import (
    _kthvalue_mask,
    lowest_k_mask,
    magnitude_mask,
    zero_masked_,
    zero_smallest_magnitude_,
)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7])
def test_exact_policy_marks_exactly_k_even_with_ties(dtype, sparsity):
    torch.manual_seed(0)
    weight = torch.randn(257, 131).to(dtype)  # bf16 has many ties at any threshold
    k = math.floor(weight.numel() * sparsity)
    mask = lowest_k_mask(weight.abs(), k, ties="exact")
    assert int(mask.sum()) == k
    # every kept weight is at least as large as every pruned one
    assert weight.abs()[~mask].float().min() >= weight.abs()[mask].float().max()


def test_threshold_policy_prunes_all_ties_and_overshoots_in_bf16():
    torch.manual_seed(0)
    weight = (torch.randn(512, 512) * 0.02).to(torch.bfloat16)
    k = weight.numel() // 2
    mask = lowest_k_mask(weight.abs(), k, ties="threshold")
    threshold = weight.abs()[mask].float().max()
    assert int(mask.sum()) > k  # ties at the threshold push sparsity above target (the study's 50.11 %)
    assert bool((weight.abs().float()[~mask] > threshold).all())


def test_edge_cases():
    scores = torch.arange(10.0)
    assert int(lowest_k_mask(scores, 0).sum()) == 0
    assert int(lowest_k_mask(scores, 10).sum()) == 10
    assert lowest_k_mask(scores, 3).tolist() == [True] * 3 + [False] * 7


# --- magnitude_mask: the histogram (radix) selection on the float bit patterns -------------------------------

DTYPES = [torch.bfloat16, torch.float16, torch.float32]


def reference_mask(weight: torch.Tensor, k: int) -> torch.Tensor:
    """The k smallest |w| by a full stable sort (ties: first by position), in float64 so no ties are made up."""
    order = torch.sort(weight.abs().double().reshape(-1), stable=True).indices[:k]
    mask = torch.zeros(weight.numel(), dtype=torch.bool)
    mask[order] = True
    return mask.view_as(weight)


def kth_smallest_abs(weight: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(weight.abs().double().reshape(-1)).values[k - 1]


def matrices(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    normal = torch.randn(211, 97) * 0.02
    return {
        "normal": normal.to(dtype),
        "few values": torch.randint(-3, 4, (211, 97)).float().to(dtype),  # huge ties, negatives, zeros
        "all equal": torch.full((64, 33), -0.5, dtype=dtype),
        "half zeros": normal.masked_fill(normal.abs() < 0.0135, 0).to(dtype),  # an already pruned matrix
        "signed zeros": torch.tensor([[0.0, -0.0, 1.0, -1.0], [-0.0, 2.0, 0.0, -2.0]], dtype=dtype),
    }


@pytest.fixture(params=[1 << 20, 1000, "sort"], ids=["one chunk", "many chunks", "GPU sort path"])
def chunk(request, monkeypatch):
    """Each case with the real histogram chunk, with tiny chunks (ties spread over many of them), and with
    the radix-sort selection that GPUs take (run here on the CPU: the same ops)."""
    if request.param == "sort":
        monkeypatch.setattr(masks, "_SORT_DEVICES", frozenset({"cpu"}))
    else:
        monkeypatch.setattr(masks, "_CHUNK", request.param)
    return request.param


@pytest.mark.parametrize("dtype", DTYPES)
def test_exact_marks_exactly_k_and_equals_a_sort_based_selection(dtype, chunk):
    for name, weight in matrices(dtype).items():
        n = weight.numel()
        for k in sorted({1, 2, n // 10, n // 2, (7 * n) // 10, n - 2, n - 1} - {0}):
            mask = magnitude_mask(weight, k, ties="exact")
            assert mask.dtype == torch.bool and mask.shape == weight.shape
            assert int(mask.sum()) == k, (name, k)
            assert torch.equal(mask, reference_mask(weight, k)), (name, k)
            kept, pruned = weight.abs()[~mask].double(), weight.abs()[mask].double()
            assert kept.min() >= pruned.max(), (name, k)  # every kept weight ≥ every pruned one


@pytest.mark.parametrize("dtype", DTYPES)
def test_threshold_marks_every_abs_at_or_below_the_kth_smallest(dtype, chunk):
    for name, weight in matrices(dtype).items():
        n = weight.numel()
        for k in sorted({1, n // 10, n // 2, n - 1} - {0}):
            mask = magnitude_mask(weight, k, ties="threshold")
            expected = weight.abs().double() <= kth_smallest_abs(weight, k)
            assert torch.equal(mask, expected), (name, k)
            assert int(mask.sum()) >= k


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.7, 0.9])
def test_magnitude_mask_agrees_with_the_kthvalue_path(dtype, sparsity, chunk):
    torch.manual_seed(1)
    weight = (torch.randn(300, 129) * 0.02).to(dtype)
    k = math.floor(weight.numel() * sparsity)
    for ties in ("exact", "threshold"):
        assert torch.equal(magnitude_mask(weight, k, ties), _kthvalue_mask(weight.abs(), k, ties))


def test_magnitude_mask_edge_cases():
    weight = torch.randn(6, 5, dtype=torch.bfloat16)
    assert not magnitude_mask(weight, 0).any() and not magnitude_mask(weight, -3).any()
    assert magnitude_mask(weight, 30).all() and magnitude_mask(weight, 99).all()
    with pytest.raises(ValueError, match="ties"):
        magnitude_mask(weight, 3, ties="closest")


def test_nan_ranks_as_the_largest_magnitude():
    for dtype in DTYPES:
        weight = torch.tensor([0.5, float("nan"), -float("inf"), 0.0, -float("nan"), 1.0], dtype=dtype)
        assert magnitude_mask(weight, 4).tolist() == [True, False, True, True, False, True]
        assert magnitude_mask(weight, 5).tolist() == [True, True, True, True, False, True]


def test_non_contiguous_and_fallback_dtypes():
    torch.manual_seed(2)
    weight = torch.randn(40, 30, dtype=torch.bfloat16).t()  # transposed view: positions are logical
    assert torch.equal(magnitude_mask(weight, 500), reference_mask(weight, 500))
    as_float64 = torch.randn(40, 30, dtype=torch.float64)  # no histogram path: kthvalue
    assert torch.equal(magnitude_mask(as_float64, 500), reference_mask(as_float64, 500))


def test_lowest_k_mask_orders_by_value_and_uses_the_fast_path_for_non_negative_scores():
    torch.manual_seed(3)
    scores = torch.randn(50, 40)
    k = 700
    expected = torch.zeros(scores.numel(), dtype=torch.bool)
    expected[torch.sort(scores.reshape(-1), stable=True).indices[:k]] = True
    assert torch.equal(lowest_k_mask(scores, k), expected.view_as(scores))  # negatives: by value, not |s|
    for dtype in DTYPES:
        positive = scores.abs().to(dtype)
        assert torch.equal(lowest_k_mask(positive, k), reference_mask(positive, k))


@pytest.mark.parametrize("dtype", [*DTYPES, torch.float64])
def test_zero_masked_matches_masked_fill(dtype):
    torch.manual_seed(4)
    weight = torch.randn(33, 17).to(dtype)
    weight[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0], dtype=dtype)
    mask = torch.rand(33, 17) < 0.5
    mask[0, :4] = False
    expected = weight.masked_fill(mask, 0)
    out = zero_masked_(weight, mask)
    assert out is weight
    same_bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[weight.element_size()]
    assert torch.equal(weight.view(same_bits), expected.view(same_bits))  # bit-exact, NaN and -0 included


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_smallest_magnitude_in_place_zeroes_exactly_what_the_mask_marks(dtype, chunk):
    for name, weight in matrices(dtype).items():
        n = weight.numel()
        for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
            for ties in ("exact", "threshold"):
                expected = weight.masked_fill(magnitude_mask(weight, k, ties), 0)
                pruned = weight.clone()
                assert zero_smallest_magnitude_(pruned, k, ties) is pruned
                same_bits = torch.int32 if dtype == torch.float32 else torch.int16
                assert torch.equal(pruned.view(same_bits), expected.view(same_bits)), (name, k, ties)


def test_zero_smallest_magnitude_on_a_non_contiguous_view_writes_through():
    torch.manual_seed(5)
    storage = torch.randn(30, 40, dtype=torch.bfloat16)
    view = storage.t()
    expected = view.masked_fill(reference_mask(view, 600), 0)
    zero_smallest_magnitude_(view, 600)
    assert torch.equal(storage.t(), expected) and int((storage == 0).sum()) == 600


def test_the_selection_restores_the_intra_op_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        weight = torch.randn(64, 64, dtype=torch.bfloat16)
        zero_smallest_magnitude_(weight, 100)
        magnitude_mask(weight, 100)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --- zero_smallest_magnitude_ on bf16/fp16: pass 2 is hardshrink at the k-th |w| (see the module doc) -------

def awkward(dtype: torch.dtype) -> torch.Tensor:
    """Ties that span chunks and rows, ±0, subnormals, ±inf, and values that round to the same 16-bit float."""
    torch.manual_seed(6)
    tiny = torch.finfo(dtype).smallest_normal
    values = torch.tensor([0.0, -0.0, tiny / 4, -tiny / 4, tiny, 1e-3, -1e-3, 0.5, -0.5, 2.0, float("inf"),
                           -float("inf")])
    picks = torch.randint(0, len(values), (9001,))
    weight = values[picks] * torch.where(torch.rand(9001) < 0.3, 1.0 + torch.rand(9001) * 1e-3, 1.0)
    return weight.to(dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [1 << 20, 1000, 3000, "sort"])  # 3000: rows of 1024 + a ragged tail
def test_zero_smallest_magnitude_16_bit_is_bit_exact_at_every_kind_of_threshold(dtype, chunk_size, monkeypatch):
    if chunk_size == "sort":
        monkeypatch.setattr(masks, "_SORT_DEVICES", frozenset({"cpu"}))
    else:
        monkeypatch.setattr(masks, "_CHUNK", chunk_size)
    weight = awkward(dtype)
    n = weight.numel()
    for k in [1, 2, 500, 1499, 1500, 1501, n // 3, n // 2, 2 * n // 3, 7000, 8000, n - 1]:
        for ties in ("exact", "threshold"):
            at_or_below = weight.abs().double() <= kth_smallest_abs(weight, k)
            mask = reference_mask(weight, k) if ties == "exact" else at_or_below
            pruned = zero_smallest_magnitude_(weight.clone(), k, ties)
            expected = weight.masked_fill(mask, 0)
            assert torch.equal(pruned.view(torch.int16), expected.view(torch.int16)), (k, ties)
            if ties == "exact":
                assert int((pruned.view(torch.int16) != weight.view(torch.int16)).sum()) <= k


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_zeroed_entries_are_positive_zero_and_kept_negative_zeros_keep_their_sign(dtype):
    weight = torch.tensor([-0.0, 0.0, -0.0, -0.0, 1.0, -0.0, -2.0, -0.0], dtype=dtype)
    pruned = zero_smallest_magnitude_(weight.clone(), 3)  # the first 3 of the six ±0 ties
    bits = pruned.view(torch.int16).tolist()
    negative_zero = torch.tensor(-0.0, dtype=dtype).view(torch.int16).item()
    assert bits[:3] == [0, 0, 0]  # zeroed: +0.0, whatever the sign was
    assert bits[3] == negative_zero and bits[5] == negative_zero and bits[7] == negative_zero  # kept as they were
    assert pruned[4] == 1.0 and pruned[6] == -2.0
    pruned = zero_smallest_magnitude_(weight.clone(), 3, ties="threshold")  # all six ties at 0, none else
    assert pruned.view(torch.int16).tolist() == [0, 0, 0, 0, weight.view(torch.int16)[4], 0,
                                                 weight.view(torch.int16)[6], 0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ties", ["exact", "threshold"])
def test_with_nan_the_in_place_path_keeps_every_nan_bit_pattern(dtype, ties, chunk):
    """hardshrink (as float) would rewrite a bf16 -NaN as +NaN: with any NaN the compare path runs instead."""
    torch.manual_seed(7)
    weight = torch.randn(4000).to(dtype)
    weight[[3, 100, 2999]] = torch.tensor([float("nan"), -float("nan"), float("nan")], dtype=dtype)
    weight.view(torch.int16)[100] |= -0x8000  # a NaN with the sign bit set
    assert weight.view(torch.int16)[100] < 0
    for k in (1, 2000, 3996, 3998):
        expected = weight.masked_fill(magnitude_mask(weight, k, ties), 0)
        pruned = zero_smallest_magnitude_(weight.clone(), k, ties)
        assert torch.equal(pruned.view(torch.int16), expected.view(torch.int16)), k
        left = 3 if k <= 3997 else (4000 - k if ties == "exact" else 0)  # threshold at NaN: all NaN ties
        assert int(pruned.isnan().sum()) == left


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("ties", ["exact", "threshold"])
@pytest.mark.parametrize("zeros_before", [0, 10, 700])  # 700 > k: more zeros than the pruner must make
def test_prune_smallest_magnitude_knows_the_zeros_it_leaves(dtype, ties, zeros_before, chunk):
    from publisher.prune.masks import prune_smallest_magnitude_

    weight = (torch.randn(40, 25, generator=torch.Generator().manual_seed(zeros_before)) * 0.02).to(dtype)
    weight.view(-1)[torch.randperm(1000, generator=torch.Generator().manual_seed(1))[:zeros_before]] = 0
    weight.view(-1)[:3] = -0.0
    before = int((weight == 0).sum())
    reported = prune_smallest_magnitude_(weight, 500, ties)
    assert reported == int((weight == 0).sum())  # what a counting pass would find
    if ties == "exact":
        assert reported == max(500, before)
