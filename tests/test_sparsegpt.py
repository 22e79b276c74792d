"""SparseGPT against a port of the reference (IST-DASLab/sparsegpt `fasterprune`), its properties, and the
sequential run on every supported architecture."""

import math

import pytest
import torch
from tiny_models import CONFIGS, build_model

from publisher.prune import PruneRequest, prune_model, sequential
from publisher.prune.nm import nm_violations
from publisher.prune.scope import prunable_linears
from publisher.prune.sparsegpt import Hessian, inverse_cholesky, sparsegpt_prune_
from publisher.prune.wanda import wanda_nm_, wanda_unstructured_

ARCHS = sorted(CONFIGS)


def reference_fasterprune(W, H, sparsity, prunen=0, prunem=0, blocksize=128, percdamp=0.01, block_mask=None):
    """`SparseGPT.fasterprune` of the reference, verbatim but for `block_mask` (the unstructured mask rule)."""
    W = W.clone().float()
    H = H.clone()
    rows, columns = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    damp = percdamp * torch.mean(torch.diag(H))
    diag = torch.arange(columns)
    H[diag, diag] += damp
    H = torch.linalg.cholesky(H)
    H = torch.cholesky_inverse(H)
    H = torch.linalg.cholesky(H, upper=True)
    Hinv = H
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if prunen == 0:
            tmp = W1**2 / (torch.diag(Hinv1).reshape((1, -1))) ** 2
            if block_mask is None:
                thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
                mask1 = tmp <= thresh
            else:
                mask1 = block_mask(tmp, i1, i2)
        else:
            mask1 = torch.zeros_like(W1) == 1
        for i in range(count):
            w = W1[:, i]
            d = Hinv1[i, i]
            if prunen != 0 and i % prunem == 0:
                tmp = W1[:, i : (i + prunem)] ** 2 / (torch.diag(Hinv1)[i : (i + prunem)].reshape((1, -1))) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, prunen, dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err1 = (w - q) / d
            W1[:, i:] -= err1.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err1
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def layer_problem(rows=48, cols=320, tokens=600, seed=0):
    """A weight and correlated inputs with uneven feature scales (like real activations)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(cols, cols, generator=g) / math.sqrt(cols) + torch.eye(cols)
    scales = torch.exp(torch.randn(cols, generator=g))
    x = (torch.randn(tokens, cols, generator=g) @ mix) * scales
    w = torch.randn(rows, cols, generator=g)
    return w, x, 2 * x.T @ x / tokens


def exact_block_mask(sparsity, rows):
    def mask(tmp, i1, i2):  # our rule: exactly floor(rows·i2·s) - floor(rows·i1·s), ties by input then row
        k = math.floor(rows * i2 * sparsity) - math.floor(rows * i1 * sparsity)
        order = torch.sort(tmp.t().reshape(-1), stable=True).indices[:k]
        flat = torch.zeros(tmp.numel(), dtype=torch.bool)
        flat[order] = True
        return flat.view(tmp.shape[1], tmp.shape[0]).t()

    return mask


@pytest.mark.parametrize(("n", "m"), [(2, 4), (4, 8)])
def test_nm_matches_the_reference(n, m):
    w, _, h = layer_problem()
    ours = sparsegpt_prune_(w.clone(), h, sparsity=n / m, n=n, m=m)
    torch.testing.assert_close(ours, reference_fasterprune(w, h, n / m, n, m), rtol=1e-4, atol=1e-4)
    assert nm_violations(ours, n, m) == 0


@pytest.mark.parametrize("sparsity", [0.5, 0.3])
def test_unstructured_matches_the_reference_with_an_exact_count(sparsity):
    w, _, h = layer_problem()
    ours = sparsegpt_prune_(w.clone(), h, sparsity=sparsity)
    ref = reference_fasterprune(w, h, sparsity, block_mask=exact_block_mask(sparsity, w.shape[0]))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert int((ours == 0).sum()) == math.floor(w.numel() * sparsity)
    # the reference's own rule (≤ the (k+1)-th of each block) overshoots the target
    stock = reference_fasterprune(w, h, sparsity)
    assert int((stock == 0).sum()) > int((ours == 0).sum())


@pytest.mark.parametrize(("structure", "n", "m"), [("unstructured", 0, 0), ("2:4", 2, 4)])
def test_reconstruction_error_beats_wanda_and_magnitude(structure, n, m):
    """SparseGPT's point: ‖(W − Ŵ)Xᵀ‖ far below what mask-only methods leave."""
    w, x, h = layer_problem(seed=1)
    norms = x.square().sum(0).sqrt()

    def error(pruned):
        return float(((w - pruned) @ x.T).square().sum())

    sgpt = sparsegpt_prune_(w.clone(), h, sparsity=0.5, n=n, m=m)
    if m:
        wanda = wanda_nm_(w.clone(), norms, n, m)
        magnitude = wanda_nm_(w.clone(), torch.ones_like(norms), n, m)
    else:
        wanda = wanda_unstructured_(w.clone(), norms, 0.5)
        magnitude = wanda_unstructured_(w.clone(), torch.ones_like(norms), 0.5)
    assert error(sgpt) < 0.7 * error(wanda) < 0.7 * error(magnitude)


def test_dead_inputs_are_zeroed_like_the_reference_and_stay_finite():
    w, x, _ = layer_problem()
    x[:, [3, 100, 200]] = 0
    h = 2 * x.T @ x / x.shape[0]
    ours = sparsegpt_prune_(w.clone(), h, sparsity=0.5)
    assert bool(ours.isfinite().all())
    assert bool((ours[:, [3, 100, 200]] == 0).all())
    assert int((ours == 0).sum()) == w.numel() // 2  # dead columns score 0: they are part of the count
    ref = reference_fasterprune(w, h, 0.5, block_mask=exact_block_mask(0.5, w.shape[0]))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_bf16_weights_are_solved_in_fp32_and_cast_back():
    w, _, h = layer_problem()
    w16 = w.to(torch.bfloat16)
    ours = sparsegpt_prune_(w16.clone(), h, sparsity=0.5)
    assert ours.dtype == torch.bfloat16
    assert torch.equal(ours, sparsegpt_prune_(w16.float(), h, sparsity=0.5).to(torch.bfloat16))


def test_hessian_accumulates_2_over_n_xtx_in_fp32_over_chunks():
    _, x, h = layer_problem()
    acc = Hessian(x.shape[1], torch.device("cpu"))
    for part in x.to(torch.bfloat16).float().split(77):
        acc.add(part.to(torch.bfloat16))
    x16 = x.to(torch.bfloat16).double()
    torch.testing.assert_close(acc.matrix().double(), 2 * x16.T @ x16 / x.shape[0], rtol=1e-4, atol=1e-3)
    assert acc.sum.dtype == torch.float32 and acc.tokens == x.shape[0]
    u, dead = inverse_cholesky(h)
    assert not bool(dead.any()) and torch.equal(u, u.triu())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("structure", "sparsity"), [("unstructured", 0.5), ("unstructured", 0.37), ("2:4", 0.5),
                                                    ("4:8", 0.5)])
def test_sequential_sparsegpt_on_every_architecture(arch, structure, sparsity, monkeypatch):
    hessians = {}
    original = sequential.InputCapture.stats_for

    def spy(self, layer):
        stats = original(self, layer)
        hessians[layer.name] = (id(stats), stats.tokens)
        return stats

    monkeypatch.setattr(sequential.InputCapture, "stats_for", spy)
    ids = torch.randint(0, 128, (5, 24), generator=torch.Generator().manual_seed(0))
    model = build_model(arch)
    record = prune_model(model, PruneRequest("sparsegpt", sparsity, structure=structure, calibration=ids,
                                             activation_budget_bytes=1), progress=False)
    layers = prunable_linears(model)
    assert list(hessians) == [x.name for x in layers]
    assert all(tokens == 5 * 24 for _, tokens in hessians.values())
    if arch != "phi3":  # q/k/v (and gate/up) are fed the same tensor: one Hessian
        block0 = {name.rsplit(".", 1)[1]: key for name, (key, _) in hessians.items() if ".0." in name}
        assert block0["q_proj"] == block0["k_proj"] == block0["v_proj"] != block0["o_proj"]
        assert block0["gate_proj"] == block0["up_proj"] != block0["down_proj"]
    for x in record.layers:
        assert x.zeros == math.floor(x.params * sparsity), x.name
    if structure != "unstructured":
        n, m = map(int, structure.split(":"))
        assert all(nm_violations(x.module.weight, n, m) == 0 for x in layers)
    assert all(bool(x.module.weight.isfinite().all()) for x in layers)
