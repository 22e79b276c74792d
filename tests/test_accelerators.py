"""Pruning on CUDA / MPS and across a GPU + CPU device map: the same weights as on the CPU.

Skipped where no accelerator is present (this project's CI has none); run them on a machine that has one:
`.venv/bin/pytest -q tests/test_accelerators.py`.
"""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import save_tiny_model

from publisher.cli import main

ACCELERATORS = [
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")),
    pytest.param("mps", marks=pytest.mark.skipif(not torch.backends.mps.is_available(), reason="no MPS here")),
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("accelerators")
    save_tiny_model("llama", root / "llama")
    with open(root / "calib.jsonl", "w") as f:
        for i in range(12):
            f.write(json.dumps({"text": " ".join(f"w{(i * 7 + j * 3) % 126}" for j in range(60))}) + "\n")
    return root


def run(setup, out, *extra):
    result = CliRunner().invoke(main, [
        "--model", str(setup / "llama"), "--sparsity", "0.5", "--dry-run", "-q", "--output-dir", str(out),
        "--calibration-dataset", str(setup / "calib.jsonl"), "--calibration-samples", "6",
        "--calibration-seq-len", "24", *extra])
    assert result.exit_code == 0, result.output
    return load_file(out / "model.safetensors")


@pytest.mark.parametrize("device", ACCELERATORS)
@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt"])
def test_an_accelerator_prunes_like_the_cpu(setup, tmp_path, device, method):
    cpu = run(setup, tmp_path / "cpu", "--method", method)
    accelerated = run(setup, tmp_path / device, "--method", method, "--device", device)
    for name, weight in cpu.items():
        if method in ("magnitude", "random"):  # selection only: bit for bit
            assert torch.equal(weight, accelerated[name]), name
        else:  # calibrated: other kernels, so masks may differ at near-ties
            same = ((weight == 0) == (accelerated[name] == 0)).float().mean()
            assert same > 0.98, f"{name}: masks agree on {same:.2%}"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_a_gpu_and_cpu_device_map_prunes_like_the_cpu(setup, tmp_path, method):
    """Block 0 on GPU 0, block 1 offloaded to CPU memory (parameters on meta, weights in accelerate's map)."""
    (tmp_path / "map.json").write_text(json.dumps({
        "model.embed_tokens": 0, "model.rotary_emb": 0, "model.layers.0": 0, "model.layers.1": "cpu",
        "model.norm": 0, "lm_head": 0}))
    cpu = run(setup, tmp_path / "cpu", "--method", method)
    mapped = run(setup, tmp_path / "mapped", "--method", method, "--device-map", str(tmp_path / "map.json"))
    for name, weight in cpu.items():
        same = ((weight == 0) == (mapped[name] == 0)).float().mean()
        assert same > (0.9999 if method == "magnitude" else 0.98), f"{name}: masks agree on {same:.2%}"


@pytest.mark.parametrize("device", ACCELERATORS)
@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_an_accelerator_prunes_2_4_like_the_cpu(setup, tmp_path, device, method):
    """N:M on the accelerator: the tool's own compliance check passes (else a non-zero exit) and masks agree."""
    cpu = run(setup, tmp_path / "cpu", "--method", method, "--structure", "2:4")
    accelerated = run(setup, tmp_path / device, "--method", method, "--structure", "2:4", "--device", device)
    for name, weight in cpu.items():
        same = ((weight == 0) == (accelerated[name] == 0)).float().mean()
        assert same > (0.9999 if method == "magnitude" else 0.98), f"{name}: masks agree on {same:.2%}"


@pytest.fixture
def chat_base(tmp_path):
    """A tiny chat model saved to `base/` and a text file `text.jsonl` for perplexity and calibration."""
    from fixtures.measure_models import tiny_chat_model

    model, tokenizer = tiny_chat_model()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    with open(tmp_path / "text.jsonl", "w") as f:
        for i in range(12):
            f.write(json.dumps({"text": " ".join(f"w{(i * 5 + j * 11) % 126}" for j in range(60))}) + "\n")
    return tmp_path


@pytest.mark.parametrize("device", ACCELERATORS)
def test_the_measure_stage_on_an_accelerator_matches_the_cpu(chat_base, device):
    """Perplexity and SRS of dense and pruned, on the accelerator: the same items, perplexity within 0.5 %."""
    from fixtures.measure_models import FIXTURES

    from publisher.results import read_results

    tmp_path = chat_base
    metrics = {}
    for where in ("cpu", device):
        out = tmp_path / where
        result = CliRunner().invoke(main, [
            "--model", str(tmp_path / "base"), "--sparsity", "0.5", "--dry-run", "-q", "--output-dir", str(out),
            "--base-model-id", "test-org/tiny-chat", "--cache-dir", str(tmp_path / f"cache-{where}"),
            "--skip-eval", "latency", "--ppl-data", str(tmp_path / "text.jsonl"), "--ppl-samples", "4",
            "--ppl-seq-len", "48", "--bbq-path", str(FIXTURES / "bbq"), "--bbq-categories", "all",
            "--bbq-limit", "3", "--device", where])
        assert result.exit_code == 0, result.output
        metrics[where] = read_results(out / "results.json").metrics
    cpu, accelerated = metrics["cpu"], metrics[device]
    for model_kind in ("dense", "pruned"):
        a, b = cpu["perplexity"][model_kind], accelerated["perplexity"][model_kind]
        assert a["token_hash"] == b["token_hash"]
        assert abs(a["ppl"] - b["ppl"]) <= 0.005 * a["ppl"], (model_kind, a["ppl"], b["ppl"])
        items = [c["items"] for c in cpu["srs"][model_kind]["per_category"]]
        assert items == [c["items"] for c in accelerated["srs"][model_kind]["per_category"]]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_the_whole_command_on_a_gpu_publishes_a_verified_run(chat_base, monkeypatch):
    """The main command as a user types it with --device cuda: Wanda, perplexity and SRS measured on the GPU, the
    card names the GPU, and the run is published to the local Hub, its shard's zeros re-counted from there."""
    from fixtures.measure_models import FIXTURES

    from publisher.results import read_results

    tmp_path = chat_base
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, [
        "--model", str(tmp_path / "base"), "--sparsity", "0.5", "--method", "wanda", "--device", "cuda",
        "--base-model-id", "test-org/tiny-chat", "--hub", "local", "--json", "--cache-dir", str(tmp_path / "cache"),
        "--calibration-dataset", str(tmp_path / "text.jsonl"), "--calibration-samples", "6",
        "--calibration-seq-len", "24", "--skip-eval", "latency", "--ppl-data", str(tmp_path / "text.jsonl"),
        "--ppl-samples", "4", "--ppl-seq-len", "48", "--bbq-path", str(FIXTURES / "bbq"), "--bbq-categories", "all",
        "--bbq-limit", "3"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["sparsity_check"]["zeros"] > 0 and summary["commit"]
    results = read_results(tmp_path / summary["output_dir"] / "results.json")
    assert results.settings["device"] == "cuda" and results.metrics["perplexity"]["pruned"]["ppl"] > 0
    assert results.metrics["srs"]["pruned"]["per_category"]
    card = (tmp_path / summary["card"]).read_text()
    assert "device `cuda`" in card and torch.cuda.get_device_name(0) in card
    assert abs(summary["actual_sparsity"] - 0.5) < 1e-4
