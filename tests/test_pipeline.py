"""Every stage on tiny random models (Llama and Gemma-2 shapes), through the CLI, as a dry run."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import expected_prunable, save_tiny_model

from publisher.cli import main
from publisher.errors import OutputDirError
from publisher.results import read_results
from publisher.run_folder import RunFolder

LICENSED_README = "---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# tiny\n"


def dry_run(model_dir, out_dir, *extra):
    args = [
        "--model",
        str(model_dir),
        "--sparsity",
        "0.5",
        "--dry-run",
        "-q",
        "--output-dir",
        str(out_dir),
        "--base-model-id",
        "test-org/tiny",
        *extra,
    ]
    return CliRunner().invoke(main, args)


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_dry_run_produces_checkpoint_results_and_card(tmp_path, arch):
    model_dir = save_tiny_model(arch, tmp_path / "base", readme=LICENSED_README)
    out = tmp_path / "run"
    result = dry_run(model_dir, out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["dry_run"] is True and summary["card"] == str(out / "README.md")

    results = read_results(out / "results.json")
    assert results.sparsity.prunable_params == expected_prunable(arch)
    assert results.sparsity.actual_sparsity == 0.5
    assert results.source.kind == "folder" and len(results.source.content_sha256) == 64
    assert results.source.license == "apache-2.0" and results.source.language == ["en"]
    assert results.pruning.prune_time_s >= 0
    assert set(results.files) >= {"config.json", "model.safetensors", "tokenizer.json"}

    # the saved weights really are pruned, and only in the scope
    base = load_file(model_dir / "model.safetensors")
    pruned = load_file(out / "model.safetensors")
    scoped = {layer.name for layer in results.sparsity.layers}
    for name, tensor in pruned.items():
        if name in scoped:
            assert int((tensor == 0).sum()) == tensor.numel() // 2
        else:
            assert torch.equal(tensor, base[name]), name

    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and "base_model: test-org/tiny" in card
    assert "- research-only" in card and "Research use only" in card
    assert f"{results.sparsity.zero_params:,} of {results.sparsity.prunable_params:,}" in card


def test_rerun_resumes_and_a_damaged_checkpoint_is_redone(tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base")
    out = tmp_path / "run"
    assert dry_run(model_dir, out).exit_code == 0
    again = dry_run(model_dir, out, "--json")
    assert json.loads(again.stdout)["skipped_stages"] == ["prune", "sparsity", "measure"]

    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size, different bytes
    redone = dry_run(model_dir, out, "--json")
    assert json.loads(redone.stdout)["skipped_stages"] == []
    assert read_results(out / "results.json").sparsity.actual_sparsity == 0.5


def test_output_folder_of_another_run_is_refused_unless_overwrite(tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base")
    out = tmp_path / "run"
    assert dry_run(model_dir, out).exit_code == 0
    other = CliRunner().invoke(
        main, ["--model", str(model_dir), "--sparsity", "0.3", "--dry-run", "-q", "--output-dir", str(out)]
    )
    assert other.exit_code == 2 and "holds a different run" in other.stderr
    assert read_results(out / "results.json").pruning.target_sparsity == 0.5  # untouched
    forced = CliRunner().invoke(
        main,
        ["--model", str(model_dir), "--sparsity", "0.3", "--dry-run", "-q", "--output-dir", str(out), "--overwrite"],
    )
    assert forced.exit_code == 0, forced.output
    assert read_results(out / "results.json").pruning.target_sparsity == 0.3


def test_card_render_reproduces_the_card_byte_for_byte(tmp_path):
    model_dir = save_tiny_model("gemma2", tmp_path / "base", readme=LICENSED_README)
    out = tmp_path / "run"
    assert dry_run(model_dir, out).exit_code == 0
    original = (out / "README.md").read_bytes()
    rendered = CliRunner().invoke(main, ["card", "render", str(out / "results.json"), "-o", str(tmp_path / "c.md")])
    assert rendered.exit_code == 0, rendered.output
    assert (tmp_path / "c.md").read_bytes() == original


def test_threshold_tie_policy_is_recorded_and_shown(tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base")
    out = tmp_path / "run"
    assert dry_run(model_dir, out, "--magnitude-ties", "threshold", "--dtype", "bfloat16").exit_code == 0
    results = read_results(out / "results.json")
    assert results.pruning.tie_policy == "threshold" and results.source.dtype == "bfloat16"
    assert results.sparsity.actual_sparsity >= 0.5
    assert "threshold (every weight with" in (out / "README.md").read_text()


def test_a_folder_in_use_by_another_run_is_never_taken(tmp_path):
    """Runs that differ only in seed or dtype share a default folder: the one still pruning keeps it."""
    first, second = RunFolder(tmp_path / "run"), RunFolder(tmp_path / "run")
    first.claim("seed-0", overwrite=False)
    (first.staging / "model.safetensors").parent.mkdir(parents=True)
    (first.staging / "model.safetensors").write_bytes(b"half a shard")
    for overwrite in (False, True):
        with pytest.raises(OutputDirError, match="in use by another publish-pruned run"):
            second.claim("seed-1", overwrite=overwrite)
    assert (first.staging / "model.safetensors").read_bytes() == b"half a shard"
    first.release()  # as if it had died mid-prune: staging is never resumed, so nothing is lost
    second.claim("seed-1", overwrite=False)
    assert not first.staging.exists() and second.record("run") == {"identity": "seed-1"}
    (second.root / "model.safetensors").write_bytes(b"a finished stage's file")
    second.release()
    with pytest.raises(OutputDirError, match="holds a different run"):
        RunFolder(tmp_path / "run").claim("seed-2", overwrite=False)
    RunFolder(tmp_path / "run").claim("seed-2", overwrite=True)


def test_a_claim_that_fails_lets_the_folder_go(tmp_path, monkeypatch):
    folder = RunFolder(tmp_path / "run")

    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(folder, "write_record", full_disk)
    with pytest.raises(OSError):
        folder.claim("seed-0", overwrite=False)
    RunFolder(tmp_path / "run").claim("seed-0", overwrite=False)  # not "in use": the failed claim let go
