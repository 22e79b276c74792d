"""Wanda and the block-by-block calibration forward, on tiny models of every supported architecture."""

import math

import pytest
import torch
from tiny_models import _COMMON, CONFIGS, build_model
from transformers import AutoModelForCausalLM
from transformers.models.gemma2 import Gemma2Config
from transformers.models.qwen2 import Qwen2Config

from publisher.prune import PruneRequest, prune_model, sequential
from publisher.prune.nm import nm_violations
from publisher.prune.scope import find_decoder_blocks, prunable_linears
from publisher.prune.sequential import BlockRunner
from publisher.prune.wanda import wanda_unstructured_

ARCHS = sorted(CONFIGS)


def calibration(samples=5, seq_len=24, seed=0):
    return torch.randint(0, 128, (samples, seq_len), generator=torch.Generator().manual_seed(seed))


def sliding(arch: str):
    """Models whose sliding-window layers really differ from their full ones (window 4 < calibration length):
    each block must get its own layer type's mask (Gemma-2 eager; Qwen2 sdpa, 1 full + 1 sliding layer)."""
    torch.manual_seed(0)
    if arch == "gemma2":
        config = Gemma2Config(**_COMMON, head_dim=8, sliding_window=4)
    else:
        config = Qwen2Config(**_COMMON, use_sliding_window=True, sliding_window=4, max_window_layers=1)
        assert len(set(config.layer_types)) == 2
    return AutoModelForCausalLM.from_config(config).eval()


def models():
    cases = [(arch, lambda a=arch: build_model(a)) for arch in ARCHS]
    cases += [(f"{a}-sliding", lambda a=a: sliding(a)) for a in ("gemma2", "qwen2")]
    return cases


@pytest.mark.parametrize(("name", "make"), models(), ids=[n for n, _ in models()])
@pytest.mark.parametrize("chunk", [1, 2, 64])
def test_block_runner_reproduces_the_models_own_block_outputs(name, make, chunk, monkeypatch):
    """Running block after block from the recorded args gives exactly what the model's forward computes."""
    model = make()
    ids = calibration()
    _, blocks = find_decoder_blocks(model)
    expected = []
    handles = [b.register_forward_hook(lambda m, a, out: expected.append(out[0] if isinstance(out, tuple) else out))
               for b in blocks]
    with torch.no_grad():
        model(input_ids=ids, use_cache=False)
    for h in handles:
        h.remove()
    monkeypatch.setattr(sequential, "samples_per_chunk", lambda *a: chunk)  # 5 samples: 5×1, 2+2+1, 1×5
    with torch.no_grad():
        runner = BlockRunner(model, ids)
        assert len(runner.hidden) == math.ceil(5 / chunk)
        for index in range(runner.num_blocks):
            runner.run(index, keep_outputs=True)
            torch.testing.assert_close(torch.cat(runner.hidden), expected[index], rtol=1e-5, atol=1e-5)
    assert all("forward" not in b.__dict__ for b in blocks)  # the stubs are gone


def reference_wanda(model, ids, sparsity):
    """Independent sequential Wanda: whole-model forwards with hooks, one block at a time, float64 norms."""
    layers = prunable_linears(model)
    for block in sorted({x.block for x in layers}):
        mine = [x for x in layers if x.block == block]
        norms = {x.name: torch.zeros(x.module.in_features, dtype=torch.float64) for x in mine}

        def hook(sums):
            def accumulate(module, args):
                sums.add_(args[0].double().reshape(-1, args[0].shape[-1]).square().sum(0))

            return accumulate

        handles = [x.module.register_forward_pre_hook(hook(norms[x.name])) for x in mine]
        with torch.no_grad():
            model(input_ids=ids, use_cache=False)
        for h in handles:
            h.remove()
        for x in mine:
            w = x.module.weight.data
            scores = w.abs().double() * norms[x.name].sqrt()
            k = math.floor(w.shape[1] * sparsity)
            drop = torch.sort(scores, dim=1, stable=True).indices[:, :k]
            w.scatter_(1, drop, 0.0)
    return model


@pytest.mark.parametrize("arch", ARCHS)
def test_wanda_matches_an_independent_whole_model_implementation(arch):
    ids = calibration()
    ours = build_model(arch)
    prune_model(ours, PruneRequest("wanda", 0.5, calibration=ids, activation_budget_bytes=1), progress=False)
    ref = reference_wanda(build_model(arch), ids, 0.5)
    for a, b in zip(prunable_linears(ours), prunable_linears(ref), strict=True):
        same = ((a.module.weight == 0) == (b.module.weight == 0)).float().mean()
        assert same > 0.999, f"{a.name}: masks agree on {same:.4%}"


@pytest.mark.parametrize("arch", ARCHS)
def test_every_prunable_linear_gets_activation_norms_and_the_target(arch, monkeypatch):
    """The study's Wanda never hooked o_proj/down_proj: here every linear, fused Phi-3 ones included."""
    seen = {}
    original = sequential.InputCapture.stats_for

    def spy(self, layer):
        stats = original(self, layer)
        seen[layer.name] = stats.norms().clone()
        return stats

    monkeypatch.setattr(sequential.InputCapture, "stats_for", spy)
    model = build_model(arch)
    record = prune_model(model, PruneRequest("wanda", 0.5, calibration=calibration()), progress=False)
    names = [x.name for x in prunable_linears(model)]
    assert list(seen) == names
    suffixes = {n.rsplit(".", 1)[1] for n in names}
    required = {"o_proj", "down_proj"} | ({"qkv_proj", "gate_up_proj"} if arch == "phi3" else {"q_proj", "up_proj"})
    assert required <= suffixes
    for name, norms in seen.items():
        assert bool((norms > 0).all()) and bool(norms.isfinite().all()), name
    assert all(x.zeros == x.params // 2 for x in record.layers)
    zeros = sum(x.zeros for x in record.layers)
    assert zeros / sum(x.params for x in record.layers) == 0.5


@pytest.mark.parametrize("sparsity", [0.37, 0.5, 0.61])
def test_unstructured_wanda_hits_the_target_exactly_per_matrix(sparsity):
    model = build_model("qwen2")
    record = prune_model(model, PruneRequest("wanda", sparsity, calibration=calibration()), progress=False)
    for x in record.layers:
        assert x.zeros == math.floor(x.params * sparsity), x.name


def test_rows_get_floor_or_one_more_and_the_extras_go_to_the_lowest_next_scores():
    torch.manual_seed(0)
    weight = torch.randn(6, 10)
    norms = torch.rand(10) + 0.5
    pruned = wanda_unstructured_(weight.clone(), norms, 0.35)  # 21 of 60: 3 per row + 3 extra
    per_row = (pruned == 0).sum(1)
    assert int(per_row.sum()) == 21 and set(per_row.tolist()) == {3, 4}
    scores = weight.abs() * norms
    ordered = torch.sort(scores, dim=1).values
    extra_rows = torch.sort(ordered[:, 3]).indices[:3]
    assert sorted(torch.nonzero(per_row == 4).flatten().tolist()) == sorted(extra_rows.tolist())
    for r in range(6):  # in each row the pruned ones are the lowest scores
        kept, dropped = scores[r][pruned[r] != 0], scores[r][pruned[r] == 0]
        assert kept.min() > dropped.max()


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("structure", "n", "m"), [("2:4", 2, 4), ("4:8", 4, 8)])
def test_wanda_nm_is_compliant_everywhere(arch, structure, n, m):
    model = build_model(arch)
    prune_model(model, PruneRequest("wanda", n / m, structure=structure, calibration=calibration()), progress=False)
    for layer in prunable_linears(model):
        assert nm_violations(layer.module.weight, n, m) == 0, layer.name


def test_chunking_does_not_change_the_result():
    ids = calibration(samples=6)
    masks = []
    for budget in (1, 1 << 30):  # one sample per chunk vs all at once
        model = build_model("llama")
        prune_model(model, PruneRequest("wanda", 0.5, calibration=ids, activation_budget_bytes=budget),
                    progress=False)
        masks.append(torch.cat([x.module.weight.flatten() == 0 for x in prunable_linears(model)]))
    assert (masks[0] == masks[1]).float().mean() > 0.999


def test_bf16_model_stays_bf16_and_the_untouched_weights_are_unchanged():
    model = build_model("gemma2", dtype=torch.bfloat16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    record = prune_model(model, PruneRequest("wanda", 0.5, calibration=calibration()), progress=False)
    scoped = {x.name for x in record.layers}
    for name, tensor in model.state_dict().items():
        assert tensor.dtype == torch.bfloat16
        if name not in scoped:
            assert torch.equal(tensor, before[name]), name
    assert all(x.zeros == x.params // 2 for x in record.layers)


def test_chunk_size_follows_the_budget():
    model = build_model("llama")
    _, blocks = find_decoder_blocks(model)
    per_sample = 24 * (4 * sum(m.in_features + m.out_features for m in blocks[0].modules()
                               if isinstance(m, torch.nn.Linear)) + 8 * 4 * 24)
    assert sequential.samples_per_chunk(blocks, 24, 4, 3 * per_sample) == 3
    assert sequential.samples_per_chunk(blocks, 24, 4, 1) == 1
