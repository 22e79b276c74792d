import pytest
import torch
from tiny_models import CONFIGS, build_model, expected_prunable

from publisher.errors import ArchitectureError
from publisher.prune import PruneRequest, prune_model
from publisher.prune.scope import prunable_linears, unprunable_weights


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_scope_is_every_decoder_linear_and_nothing_else(arch):
    model = build_model(arch)
    layers = prunable_linears(model)
    assert sum(x.module.weight.numel() for x in layers) == expected_prunable(arch)
    names = {x.name for x in layers}
    assert not any("embed" in n or "lm_head" in n or "norm" in n for n in names)
    suffixes = {n.rsplit(".", 1)[1] for n in names}
    assert {"o_proj", "down_proj"} <= suffixes  # the study's Wanda skipped these two
    assert unprunable_weights(model) == (0.0, None)  # every matrix of the blocks is a linear: nothing left dense


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_pruning_touches_only_the_scope(arch, method):
    model = build_model(arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = prune_model(model, PruneRequest(method=method, sparsity=0.5), progress=False)
    pruned = {x.name for x in record.layers}
    for name, tensor in model.state_dict().items():
        if name in pruned:
            continue
        assert torch.equal(tensor, before[name]), f"{name} changed but is outside the scope"
    zeros = sum(x.zeros for x in record.layers)
    total = sum(x.params for x in record.layers)
    if method == "magnitude":
        assert zeros == sum(x.params // 2 for x in record.layers)  # exact-k per matrix
    else:
        assert abs(zeros / total - 0.5) < 0.02


def test_a_model_without_decoder_blocks_gets_a_clear_error():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.LayerNorm(4))
    with pytest.raises(ArchitectureError, match="no decoder blocks found in Sequential.*0 \\(Embedding\\)"):
        prunable_linears(model)
