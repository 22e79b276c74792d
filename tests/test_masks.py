import math

import pytest
import torch

from publisher.prune.masks import lowest_k_mask


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
