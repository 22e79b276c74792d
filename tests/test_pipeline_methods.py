"""Every method and structure through the CLI on tiny models, with calibration from a local file."""

import json
import random

import pytest
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import expected_prunable, save_tiny_exaone3, save_tiny_gemma3_vlm, save_tiny_model

from publisher.cli import main
from publisher.results import read_results


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    save_tiny_model("llama", root / "llama")
    save_tiny_model("phi3", root / "phi3")
    save_tiny_gemma3_vlm(root / "gemma3-vlm")
    save_tiny_exaone3(root / "exaone3")
    rng = random.Random(0)
    with open(root / "calib.jsonl", "w") as f:
        for _ in range(30):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(126)}" for _ in range(80))}) + "\n")
    return root


def run(setup, model, out, *extra):
    return CliRunner().invoke(main, [
        "--model", str(setup / model), "--sparsity", "0.5", "--dry-run", "-q", "--output-dir", str(out),
        "--calibration-dataset", str(setup / "calib.jsonl"), "--calibration-samples", "8",
        "--calibration-seq-len", "32", *extra])


@pytest.mark.parametrize("model", ["llama", "phi3"])
@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_methods_hit_the_target_and_record_their_calibration(setup, tmp_path, model, method):
    out = tmp_path / "run"
    result = run(setup, model, out, "--method", method)
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    assert abs(results.sparsity.actual_sparsity - 0.5) < 1e-4  # every projection, o_proj/down_proj included
    assert all(abs(layer.sparsity - 0.5) < 0.01 for layer in results.sparsity.layers)
    calibration = results.pruning.calibration
    assert calibration["dataset"] == "calib.jsonl" and calibration["samples"] == 8 and calibration["seq_len"] == 32
    assert len(calibration["token_sha256"]) == 64 and len(calibration["file_sha256"]) == 64
    card = (out / "README.md").read_text()
    assert "8 × 32 tokens of calib.jsonl" in card and f"- {method}" in card


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_two_four_is_exact_in_every_group_of_the_saved_files(setup, tmp_path, method):
    out = tmp_path / "run"
    result = run(setup, "llama", out, "--method", method, "--structure", "2:4")
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    assert results.sparsity.nm_violations == 0 and results.pruning.structure == "2:4"
    weights = load_file(out / "model.safetensors")
    for layer in results.sparsity.layers:
        groups = weights[layer.name].reshape(-1, 4)
        assert bool(((groups == 0).sum(1) == 2).all()), layer.name
    assert "| 2:4 compliance | 0 groups" in (out / "README.md").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    (["--structure", "2:4", "--sparsity", "0.3"], "implies sparsity 0.5"),
    (["--structure", "2x4"], "unknown structure"),
    (["--method", "wanda", "--calibration-samples", "0"], "needs calibration data"),
    (["--method", "wanda", "--calibration-samples", "5000"], "calibration"),
])
def test_bad_structure_and_calibration_input(setup, tmp_path, extra, message):
    out = tmp_path / "run"
    result = run(setup, "llama", out, *extra)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize(("model", "saved_prefix"), [("gemma3-vlm", "language_model.model.layers."),
                                                     ("exaone3", "transformer.h.")])
def test_models_saved_under_their_original_names_are_counted_under_them(setup, tmp_path, method, model,
                                                                         saved_prefix):
    """transformers saves these under other names than its modules': the layers are pruned and counted under the
    names the files use, and everything else (a vision tower, embeddings, norms) is untouched."""
    out = tmp_path / "run"
    result = run(setup, model, out, "--method", method)
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    names = [layer.name for layer in results.sparsity.layers]
    assert len(names) == 14 and all(n.startswith(saved_prefix) for n in names)
    assert [layer.name for layer in results.pruning.layers] == names
    assert results.sparsity.prunable_params == expected_prunable("gemma3" if model == "gemma3-vlm" else "llama")
    assert results.sparsity.zero_params == results.sparsity.prunable_params // 2
    pruned, base = load_file(out / "model.safetensors"), load_file(setup / model / "model.safetensors")
    assert set(pruned) == set(base)
    for name, tensor in base.items():
        if name not in names:
            assert pruned[name].equal(tensor), name  # vision tower, embeddings, norms: as they were
