"""N:M structure: masks, compliance counting (also on saved files), magnitude/random N:M, request errors."""

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import CONFIGS, build_model

from publisher.errors import SettingsError
from publisher.prune import PruneRequest, prune_model
from publisher.prune.nm import checkpoint_nm_violations, nm_mask, nm_violations, zero_nm_smallest_
from publisher.prune.scope import prunable_linears
from publisher.prune.structure import Structure


def brute_force_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """n lowest per group of m, ties by position: plain Python loops."""
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for r in range(scores.shape[0]):
        for g in range(0, scores.shape[1], m):
            group = [(float(scores[r, g + j]), j) for j in range(m)]
            for _, j in sorted(group)[:n]:
                mask[r, g + j] = True
    return mask


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8), (1, 3), (5, 8)])
def test_nm_mask_picks_the_n_lowest_of_every_group(n, m):
    torch.manual_seed(0)
    scores = torch.randint(0, 5, (13, m * 7)).float()  # many ties: position decides
    mask = nm_mask(scores, n, m)
    assert torch.equal(mask, brute_force_nm(scores, n, m))
    assert torch.equal(mask.view(13, 7, m).sum(-1), torch.full((13, 7), n))


def test_nm_violations_counts_groups_with_too_few_zeros_and_sums_over_row_slices():
    t = torch.ones(3, 8)
    assert nm_violations(t, 2, 4) == 6
    t[0, :2] = 0  # row 0, group 0 compliant
    t[1, 4:7] = 0  # row 1, group 1 compliant (3 zeros)
    t[2, 0] = 0  # one zero: still a violation
    assert nm_violations(t, 2, 4) == 4
    assert sum(nm_violations(t[i : i + 1], 2, 4) for i in range(3)) == 4
    with pytest.raises(ValueError, match="groups of 3"):
        nm_violations(t, 1, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_magnitude_nm_zeroes_the_smallest_abs_of_each_group(dtype):
    torch.manual_seed(1)
    weight = torch.randn(17, 32).to(dtype)
    expected = weight.masked_fill(brute_force_nm(weight.abs().float(), 2, 4), 0)
    assert torch.equal(zero_nm_smallest_(weight.clone(), 2, 4), expected)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("method", ["magnitude", "random"])
@pytest.mark.parametrize("structure", ["2:4", "4:8"])
def test_nm_masks_are_exact_on_every_prunable_matrix(arch, method, structure):
    model = build_model(arch)
    record = prune_model(model, PruneRequest(method, 0.5, structure=structure), progress=False)
    s = Structure(*map(int, structure.split(":")))
    for layer in prunable_linears(model):
        assert nm_violations(layer.module.weight, s.n, s.m) == 0, layer.name
    assert all(x.zeros * 2 == x.params for x in record.layers)
    assert record.structure == structure


def test_random_nm_follows_the_seed():
    masks = []
    for seed in (42, 42, 7):
        model = build_model("llama")
        prune_model(model, PruneRequest("random", 0.5, seed=seed, structure="2:4"), progress=False)
        masks.append(torch.cat([x.module.weight.flatten() == 0 for x in prunable_linears(model)]))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_nm_with_an_incompatible_sparsity_names_the_implied_one():
    with pytest.raises(SettingsError, match="implies sparsity 0.5.*--sparsity is 0.3"):
        prune_model(build_model("llama"), PruneRequest("magnitude", 0.3, structure="2:4"), progress=False)


def test_nm_groups_that_do_not_divide_the_inputs_name_the_layer():
    with pytest.raises(SettingsError, match=r"multiple of 7; model\.layers\.0\.self_attn\.q_proj has 32 inputs"):
        prune_model(build_model("llama"), PruneRequest("magnitude", 3 / 7, structure="3:7"), progress=False)


def test_threshold_ties_with_nm_is_an_error_and_bad_structure_text_too():
    with pytest.raises(SettingsError, match="threshold applies to unstructured"):
        prune_model(build_model("llama"), PruneRequest("magnitude", 0.5, tie_policy="threshold", structure="2:4"),
                    progress=False)
    with pytest.raises(SettingsError, match="unknown structure"):
        PruneRequest("magnitude", 0.5, structure="4:2")


def test_checkpoint_nm_violations_streams_the_saved_tensors(tmp_path, monkeypatch):
    from publisher.prune import nm

    good = zero_nm_smallest_(torch.randn(64, 16), 2, 4)
    bad = good.clone()
    bad[5, 0:4] = 1.0  # one group without zeros
    bad[9, 12:16] = torch.tensor([0.0, 1.0, 2.0, 3.0])  # one zero only
    save_file({"a.weight": good, "b.weight": bad.to(torch.bfloat16)}, tmp_path / "model.safetensors")
    monkeypatch.setattr(nm, "rows_per_chunk", lambda row_length, elements=0: 7)  # many slices
    found = checkpoint_nm_violations(tmp_path, ["b.weight", "a.weight"], Structure(2, 4))
    assert found == {"b.weight": 2, "a.weight": 0}
    assert checkpoint_nm_violations(tmp_path, ["b.weight"], Structure()) == {"b.weight": 0}
