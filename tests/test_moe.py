"""Mixture-of-experts models (issue 17): tiny random Mixtral, Qwen2-MoE (shared expert), Qwen3-MoE and OLMoE.

Every method at 50 % unstructured and 2:4 through the CLI: the target holds for every expert matrix, counted on
the saved files; routers are bit-identical to the base; the output loads in transformers and in mlx-lm with
last-position logits within 1 % (relative L2). Weights are drawn with std 0.2 so that routing depends on the
token (with the default 0.02 every token goes to nearly the same experts).
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fixtures.measure_models import write_word_text
from safetensors.torch import load_file
from tiny_models import MOE_EXPERTS, moe_config, save_tiny_moe
from transformers import AutoConfig, AutoModelForCausalLM

from publisher.cli import main
from publisher.prune import PruneRequest, prune_model
from publisher.prune.scope import prunable_linears, unprunable_weights
from publisher.results import read_results

ARCHS = sorted(MOE_EXPERTS)
HAS_MLX = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
PROMPT = np.random.default_rng(0).integers(0, 126, size=48).tolist()
EXPERT = re.compile(r"\.experts\.(\d+)\.")
ROUTER = re.compile(r"\.(gate|shared_expert_gate)\.weight$")


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("moe")
    for arch in ARCHS:
        save_tiny_moe(arch, root / arch, initializer_range=0.2)
    rng = random.Random(0)
    with open(root / "calib.jsonl", "w") as f:
        for _ in range(30):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(126)}" for _ in range(80))}) + "\n")
    return root


def run(bases: Path, arch: str, out: Path, *extra: str):
    return CliRunner().invoke(main, [
        "--model", str(bases / arch), "--dry-run", "-q", "--output-dir", str(out),
        "--calibration-dataset", str(bases / "calib.jsonl"), "--calibration-samples", "8",
        "--calibration-seq-len", "32", *extra])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        found.update(load_file(path))
    return found


def relative_logit_error(folder: Path) -> float:
    """‖mlx − torch‖ / ‖torch‖ of the last position's logits, both loaded from the folder alone."""
    import mlx.core as mx
    import mlx_lm

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        reference = model(torch.tensor([PROMPT])).logits[0, -1].numpy()
    mlx_model, _ = mlx_lm.load(str(folder))
    out = np.array(mlx_model(mx.array([PROMPT]))[0, -1].astype(mx.float32))
    return float(np.linalg.norm(out - reference) / np.linalg.norm(reference))


def expected_prunable(arch: str) -> tuple[int, int]:
    """(prunable weights, prunable matrices) from the config alone: attention + every expert's gate/up/down +
    the shared expert's projections; never the router nor shared_expert_gate."""
    c = moe_config(arch)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    attention = c.hidden_size * head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    experts = getattr(c, "num_local_experts", None) or c.num_experts
    inner = getattr(c, "moe_intermediate_size", None) or c.intermediate_size
    shared = getattr(c, "shared_expert_intermediate_size", 0) or 0
    per_layer = attention + experts * 3 * c.hidden_size * inner + 3 * c.hidden_size * shared
    return c.num_hidden_layers * per_layer, c.num_hidden_layers * (4 + 3 * experts + (3 if shared else 0))


@pytest.mark.parametrize("arch", ARCHS)
def test_scope_is_attention_experts_and_shared_experts_never_routers(arch):
    from publisher.prune.scope import prunable_matrices

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(moe_config(arch))
    matrices = prunable_matrices(model)
    assert (sum(x.numel for x in matrices), len(matrices)) == expected_prunable(arch)
    names = [x.name for x in matrices]
    assert not any(n.endswith((".gate", "shared_expert_gate")) for n in names)
    assert not any("shared_expert_gate" in x.name for x in prunable_linears(model))
    assert unprunable_weights(model) == (0.0, None)  # experts counted as pruned, routers as kept on purpose
    gate, up = (x for x in matrices if x.block == 0 and x.name.endswith(("experts.1.gate_proj", "experts.1.up_proj")))
    fused = model.get_submodule(gate.experts_name).gate_up_proj
    assert gate.matrix(fused.data).data_ptr() == fused.data[1, : fused.shape[1] // 2].data_ptr()  # a view, half-way
    assert up.matrix(fused.data).data_ptr() == fused.data[1, fused.shape[1] // 2 :].data_ptr()


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt"])
@pytest.mark.parametrize("arch", ARCHS)
def test_every_method_hits_the_target_per_expert_matrix_and_loads_everywhere(bases, tmp_path, arch, method,
                                                                             structure):
    out = tmp_path / "run"
    result = run(bases, arch, out, "--sparsity", "0.5", "--method", method, "--structure", structure)
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    c = moe_config(arch)
    experts = getattr(c, "num_local_experts", None) or c.num_experts
    layers = results.sparsity.layers  # counted on the saved files
    routed = [x for x in layers if EXPERT.search(x.name)]
    assert len(routed) == c.num_hidden_layers * experts * 3
    assert (results.sparsity.prunable_params, len(layers)) == expected_prunable(arch)
    saved = weights(out)
    for layer in layers:
        if structure == "2:4":  # exactly 2 zeros in every group of 4 inputs of every row
            groups = saved[layer.name].reshape(-1, 4)
            assert bool(((groups == 0).sum(1) == 2).all()), layer.name
        elif method == "random":  # Bernoulli(0.5) on a few hundred weights
            assert abs(layer.sparsity - 0.5) < 0.1, layer.name
        else:
            assert layer.zeros == layer.params // 2, layer.name  # exact per matrix
    base = weights(bases / arch)
    routers = [n for n in base if ROUTER.search(n)]
    assert len(routers) == c.num_hidden_layers * (2 if arch == "qwen2_moe" else 1)
    assert all(torch.equal(saved[n], base[n]) for n in routers)  # bit-identical
    assert set(saved) == set(base)  # per-expert tensors, as the base ships them
    summary = results.sparsity.moe
    assert summary["experts"]["count"] == c.num_hidden_layers * experts
    if method != "random" or structure == "2:4":
        assert summary["experts"]["min"] == summary["experts"]["max"] == 0.5
    card = (out / "README.md").read_text()
    assert "| spread across experts | min " in card and "routers not pruned (bit-identical to the base)" in card
    if HAS_MLX:
        assert relative_logit_error(out) < 0.01


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
@pytest.mark.parametrize("method", ["magnitude", "random"])
@pytest.mark.parametrize("arch", ARCHS)
def test_streamed_moe_equals_loaded(bases, tmp_path, arch, method, structure):
    """File → prune → file, one expert matrix at a time, gives the tensors and files of load → prune → save."""
    from transformers import AutoTokenizer

    from publisher.model_io import save_checkpoint
    from publisher.prune.streaming import stream_prune

    request = PruneRequest(method, 0.5, structure=structure)
    streamed = stream_prune(bases / arch, tmp_path / "streamed", request, dtype="auto", shard_size="5GB",
                            progress=False)
    model = AutoModelForCausalLM.from_pretrained(bases / arch)
    prune_model(model, request, progress=False)
    save_checkpoint(model, AutoTokenizer.from_pretrained(bases / arch), tmp_path / "loaded", shard_size="5GB")
    a, b = weights(tmp_path / "streamed"), weights(tmp_path / "loaded")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert streamed.files == sorted(p.name for p in (tmp_path / "loaded").iterdir())
    assert json.loads((tmp_path / "streamed" / "config.json").read_text()) == \
        json.loads((tmp_path / "loaded" / "config.json").read_text())
    assert all(EXPERT.search(x.name) or "experts" not in x.name for x in streamed.record.layers)


def test_the_pipeline_streams_an_moe_checkpoint(bases, tmp_path):
    result = run(bases, "mixtral", tmp_path / "run", "--sparsity", "0.5")
    assert result.exit_code == 0, result.output
    results = read_results(tmp_path / "run" / "results.json")
    assert results.environment["placement"] == "streamed from safetensors, one tensor at a time (cpu)"
    assert any(".block_sparse_moe.experts.3.w3.weight" in x.name for x in results.sparsity.layers)


def _first_block_stats(model, ids, mode):
    """Wanda's squared norms of every expert's inputs in block 0, through RoutedCapture."""
    from publisher.prune import moe_calibration
    from publisher.prune.scope import prunable_matrices
    from publisher.prune.sequential import BlockRunner
    from publisher.prune.wanda import SquaredNorms

    matrices = [x for x in prunable_matrices(model) if x.block == 0 and hasattr(x, "expert")]
    runner = BlockRunner(model, ids)
    capture = moe_calibration.RoutedCapture(model, matrices, lambda m: SquaredNorms(m.in_features, "cpu"),
                                                   mode=mode)
    with capture, torch.no_grad():
        runner.run(0)
    fallback = capture.under_floor()
    if fallback:
        with capture.all_tokens_for(fallback), torch.no_grad():
            runner.run(0)
    return runner, capture, matrices


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral"])
def test_routed_calibration_gives_each_expert_its_tokens_weighted_as_routed(arch):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(moe_config(arch, initializer_range=0.2)).eval()
    ids = torch.randint(0, 126, (4, 16), generator=torch.Generator().manual_seed(1))
    runner, capture, matrices = _first_block_stats(model, ids, "routed")
    block = runner.blocks[0]
    moe = next(m for m in block.modules() if hasattr(m, "experts") and hasattr(m, "gate"))
    # what the router decides for block 0's MoE input, by hand
    seen = {}
    handle = moe.experts.register_forward_pre_hook(lambda m, a: seen.update(x=a[0], idx=a[1], w=a[2]))
    with torch.no_grad():
        runner.run(0)
    handle.remove()
    report = capture.report()[0]
    assert report["tokens"] == ids.numel() and sum(report["routed_tokens"]) == ids.numel() * 2
    for e in range(4):
        rows, slots = torch.nonzero(seen["idx"] == e, as_tuple=True)
        assert report["routed_tokens"][e] == len(rows)
        if e in report["fell_back"]:
            continue
        x = seen["x"][rows] * seen["w"][rows, slots].view(-1, 1)
        gate = next(m for m in matrices if m.expert == e and m.part == "gate")
        assert torch.allclose(capture.stats_for(gate).sum_sq, x.square().sum(0), rtol=1e-4, atol=1e-6)
    assert report["floor"] == math.ceil(0.1 * ids.numel() * 2 / 4)


def test_experts_under_the_floor_fall_back_to_every_token(monkeypatch):
    """With the floor above every count, each expert falls back: its stats are then those of `all`."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(moe_config("qwen3_moe", initializer_range=0.2)).eval()
    ids = torch.randint(0, 126, (4, 16), generator=torch.Generator().manual_seed(1))
    _, every, matrices = _first_block_stats(model, ids, "all")
    from publisher.prune import moe_calibration

    monkeypatch.setattr(moe_calibration, "FLOOR_SHARE", 10.0)
    _, routed, _ = _first_block_stats(model, ids, "routed")
    assert routed.report()[0]["fell_back"] == [0, 1, 2, 3]
    for m in matrices:
        assert torch.allclose(routed.stats_for(m).sum_sq, every.stats_for(m).sum_sq)
        assert routed.stats_for(m).tokens == every.stats_for(m).tokens == ids.numel()


@pytest.mark.parametrize("mode", ["routed", "all"])
def test_calibrated_runs_record_and_card_the_expert_calibration(bases, tmp_path, mode):
    out = tmp_path / "run"
    result = run(bases, "qwen2_moe", out, "--sparsity", "0.5", "--method", "wanda", "--moe-calibration", mode,
                 "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["repo_id"].endswith("wanda-s50" if mode == "routed" else "wanda-s50-moeall")
    moe = read_results(out / "results.json").pruning.moe
    assert moe["calibration"] == mode and moe["experts"] == 8 and moe["shared_experts"]
    assert all(sum(layer["routed_tokens"]) == 8 * 32 * 2 for layer in moe["layers"])  # tokens × top-k
    card = (out / "README.md").read_text()
    assert f"| expert calibration | {mode}:" in card
    assert "split half-way, never across the fusion" in card


def test_routed_and_all_token_calibration_give_different_masks(bases, tmp_path):
    masks = []
    for mode in ("routed", "all"):
        assert run(bases, "qwen3_moe", tmp_path / mode, "--sparsity", "0.5", "--method", "wanda",
                   "--moe-calibration", mode).exit_code == 0
        saved = weights(tmp_path / mode)
        masks.append({n: t == 0 for n, t in saved.items() if EXPERT.search(n)})
    assert any(not torch.equal(masks[0][n], masks[1][n]) for n in masks[0])


def _expected_params(config) -> int:
    """Parameters of the model the config describes (built on the meta device): what transformers would load."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config).num_parameters()


@pytest.mark.parametrize("saliency", ["reap", "frequency"])
@pytest.mark.parametrize("arch", ARCHS)
def test_dropping_half_the_experts_gives_a_smaller_model_every_loader_reads(bases, tmp_path, arch, saliency):
    out = tmp_path / "run"
    result = run(bases, arch, out, "--method", "expert-drop", "--experts-keep", "0.5", "--expert-saliency",
                 saliency, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["repo_id"].endswith("expert-drop-k50" + ("-freq" if saliency == "frequency"
                                                                              else ""))
    results = read_results(out / "results.json")
    drop = results.pruning.moe["expert_drop"]
    assert (drop["experts_before"], drop["experts_kept"], drop["saliency"]) == (4, 2, saliency)
    config = AutoConfig.from_pretrained(out)
    assert config.num_experts_per_tok <= 2 and json.loads((out / "config.json").read_text())["num_experts"] == 2
    saved, base = weights(out), weights(bases / arch)
    files_params = sum(t.numel() for t in saved.values())
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert files_params == loaded.num_parameters() == _expected_params(config) == drop["params_after"]
    assert drop["params_after"] < drop["params_before"] == _expected_params(AutoConfig.from_pretrained(bases / arch))
    assert results.source.num_parameters == drop["params_after"]
    for layer in drop["layers"]:  # kept experts and their router rows are the base's, bit for bit
        prefix = next(n for n in base if ROUTER.search(n) and f".{layer['block']}." in n
                      and "shared" not in n).removesuffix("gate.weight")
        assert torch.equal(saved[f"{prefix}gate.weight"], base[f"{prefix}gate.weight"][layer["kept"]])
        for new, old in enumerate(layer["kept"]):
            for name in [n for n in base if n.startswith(f"{prefix}experts.{old}.")]:
                assert torch.equal(saved[name.replace(f"experts.{old}.", f"experts.{new}.")], base[name])
    assert "expert dropping: 2 of 4 experts kept per layer" in (out / "README.md").read_text()
    if HAS_MLX:
        assert relative_logit_error(out) < 0.01


def test_routing_after_dropping_uses_only_the_kept_experts(bases, tmp_path):
    out = tmp_path / "run"
    assert run(bases, "qwen3_moe", out, "--method", "expert-drop", "--experts-keep-n", "3").exit_code == 0
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    used = []
    for layer in model.model.layers:
        layer.mlp.experts.register_forward_pre_hook(lambda m, a: used.append(a[1].flatten()))
    rows = [json.loads(line)["text"] for line in (bases / "calib.jsonl").read_text().splitlines()[:8]]
    ids = torch.tensor([[int(w[1:]) for w in text.split()[:32]] for text in rows])
    with torch.no_grad():
        model(ids)
    routed = torch.cat(used)
    assert int(routed.max()) < 3 and set(routed.tolist()) == {0, 1, 2}


def test_reap_drops_an_expert_that_adds_nothing_where_frequency_keeps_it():
    ids = torch.randint(0, 126, (4, 32), generator=torch.Generator().manual_seed(2))
    kept = {}
    for saliency in ("reap", "frequency"):
        torch.manual_seed(0)  # the same model twice (dropping edits its config in place)
        model = AutoModelForCausalLM.from_config(moe_config("qwen3_moe", initializer_range=0.2,
                                                            num_hidden_layers=1)).eval()
        experts = model.model.layers[0].mlp.experts
        with torch.no_grad():
            counts = torch.bincount(model.model.layers[0].mlp.gate(
                model.model.embed_tokens(ids).reshape(-1, 32))[2].flatten(), minlength=4)
            busiest = int(counts.argmax())
            experts.down_proj[busiest] = 0  # routed to most, adds nothing
        record = prune_model(model, PruneRequest("expert-drop", 0.0, calibration=ids, experts_keep_n=3,
                                                 expert_saliency=saliency), progress=False)
        kept[saliency] = record.moe["expert_drop"]["layers"][0]["kept"]
    assert busiest not in kept["reap"] and busiest in kept["frequency"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--method", "expert-drop"], "exactly one of --experts-keep"),
    (["--method", "expert-drop", "--experts-keep", "0.5", "--experts-keep-n", "2"], "exactly one of"),
    (["--method", "expert-drop", "--experts-keep", "0.5", "--sparsity", "0.5"], "not --sparsity"),
    (["--method", "expert-drop", "--experts-keep-n", "4"], "between 1 and 3 of the 4 experts"),
    (["--method", "expert-drop", "--experts-keep", "1.5"], "--experts-keep must be strictly between 0 and 1"),
    (["--method", "magnitude", "--sparsity", "0.5", "--experts-keep", "0.5"], "apply to --method expert-drop"),
])
def test_bad_expert_drop_input_is_one_line(bases, tmp_path, extra, message):
    result = run(bases, "mixtral", tmp_path / "run", *extra)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert "Traceback" not in result.output and not (tmp_path / "run" / "model.safetensors").exists()


def test_expert_drop_on_a_dense_model_is_refused(tmp_path):
    from tiny_models import save_tiny_model

    base = save_tiny_model("llama", tmp_path / "llama")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "w1 w2 w3 w4 w5 w6 w7 w8 w9"}) + "\n")
    result = CliRunner().invoke(main, ["--model", str(base), "--method", "expert-drop", "--experts-keep", "0.5",
                                       "--dry-run", "-q", "--output-dir", str(tmp_path / "run"),
                                       "--calibration-samples", "2", "--calibration-seq-len", "8",
                                       "--calibration-dataset", str(tmp_path / "c.jsonl")])
    assert result.exit_code == 2 and "has none" in result.stderr, result.output


@pytest.mark.parametrize("arch", ARCHS)
def test_saved_config_names_the_expert_count_as_every_reader_does(bases, tmp_path, arch):
    """transformers 5 writes Qwen3-MoE's count as num_local_experts; mlx-lm and transformers 4 read num_experts."""
    assert run(bases, arch, tmp_path / "run", "--sparsity", "0.5").exit_code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["num_experts"] == 4
    config = AutoConfig.from_pretrained(tmp_path / "run")
    assert (getattr(config, "num_local_experts", None) or config.num_experts) == 4


@pytest.fixture(scope="module")
def chat_moe(tmp_path_factory) -> Path:
    """A tiny Qwen3-MoE with a chat template and room for BBQ prompts, and perplexity text."""
    from fixtures.measure_models import SIMPLE_TEMPLATE
    from tiny_models import tiny_tokenizer

    root = tmp_path_factory.mktemp("chat-moe")
    torch.manual_seed(0)
    config = moe_config("qwen3_moe", initializer_range=0.2, max_position_embeddings=512, eos_token_id=127,
                        pad_token_id=126)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(root / "base")
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = SIMPLE_TEMPLATE
    tokenizer.save_pretrained(root / "base")
    write_word_text(root / "text.jsonl")
    return root


@pytest.mark.skipif(not HAS_MLX, reason="mlx / mlx-lm not installed (Linux: pip install 'mlx[cpu]' mlx-lm)")
@pytest.mark.parametrize("method", [["--method", "sparsegpt", "--sparsity", "0.5"],
                                    ["--method", "expert-drop", "--experts-keep", "0.5"]])
def test_perplexity_srs_and_latency_measure_an_moe_checkpoint_and_its_card_lints(chat_moe, tmp_path, method):
    from fixtures.measure_models import FIXTURES

    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "--model", str(chat_moe / "base"), *method, "--dry-run", "--json", "-q", "--output-dir", str(out),
        "--cache-dir", str(tmp_path / "cache"), "--skip-eval", "", "--calibration-dataset",
        str(chat_moe / "text.jsonl"), "--calibration-samples", "4", "--calibration-seq-len", "32",
        "--ppl-data", str(chat_moe / "text.jsonl"), "--ppl-samples", "4", "--ppl-seq-len", "64",
        "--bbq-path", str(FIXTURES / "bbq"), "--bbq-categories", "all", "--bbq-limit", "2",
        "--latency-items", "2", "--latency-warmup", "0"])
    assert result.exit_code == 0, result.output
    metrics = read_results(out / "results.json").metrics
    assert metrics["perplexity"]["pruned"]["ppl"] > 1 and metrics["perplexity"]["dense"]["ppl"] > 1
    assert set(metrics["srs"]["comparison"]) == {"ambig"}
    assert metrics["latency"]["measured"] is True, metrics["latency"].get("reason")
    card = (out / "README.md").read_text()
    assert "| perplexity |" in card and "| latency per item (MLX, CPU) |" in card
    assert CliRunner().invoke(main, ["card", "lint", str(out / "README.md")]).exit_code == 0


@pytest.mark.skipif(not HAS_MLX, reason="mlx / mlx-lm not installed (Linux: pip install 'mlx[cpu]' mlx-lm)")
def test_a_published_moe_downloads_and_runs_the_same_under_mlx_lm_and_transformers(bases, hub, tmp_path,
                                                                                    monkeypatch):
    import huggingface_hub.constants
    from conftest import HUB_USER, HUB_WRITE_TOKEN
    from huggingface_hub import snapshot_download

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    result = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, [
        "--model", str(bases / "mixtral"), "--sparsity", "0.5", "--structure", "2:4", "--hub-endpoint", hub.url,
        "--output-dir", str(tmp_path / "run"), "--base-model-id", "test-org/tiny-mixtral", "--json", "-q"])
    assert result.exit_code == 0, result.output
    repo_id = f"{HUB_USER}/tiny-mixtral-magnitude-s50-2of4"
    assert json.loads(result.stdout)["repo_id"] == repo_id
    downloaded = Path(snapshot_download(repo_id, endpoint=hub.url, token=HUB_WRITE_TOKEN,
                                        cache_dir=tmp_path / "cache"))
    assert relative_logit_error(downloaded) < 0.01
    assert "block_sparse_moe.experts.3.w2.weight" in " ".join(weights(downloaded))
