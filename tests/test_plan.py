"""`plan` from configs alone, against the prunable counts in protocol.md §2."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from tiny_models import expected_prunable

from publisher.cli import main

CONFIGS_DIR = Path(__file__).parent / "fixtures" / "configs"  # abridged copies of the public config.json files


@pytest.mark.parametrize(("model", "prunable", "matrices"), [
    ("gemma-2-9b-it", 8_323_596_288, 294),
    ("Mistral-7B-Instruct-v0.3", 6_979_321_856, 224),
    ("Phi-3.5-mini-instruct", 3_623_878_656, 128),
])
def test_plan_gives_the_protocol_counts_exactly(model, prunable, matrices):
    result = CliRunner().invoke(main, ["plan", "--model", str(CONFIGS_DIR / model), "--json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["prunable_params"] == prunable and plan["prunable_matrices"] == matrices
    assert plan["expected_zeros"] <= prunable // 2 and prunable // 2 - plan["expected_zeros"] < matrices
    assert plan["methods"]["magnitude"] == "ok"
    assert plan["weights_bytes"] == 2 * plan["total_params"]  # bf16 configs
    # streamed magnitude/random hold two tensors: gemma's 256000 × 3584 embedding is the largest
    assert plan["streamed_memory_bytes"] < plan["memory_needed_bytes"] / 4
    if model == "gemma-2-9b-it":
        assert plan["streamed_memory_bytes"] == 2 * 256_000 * 3584 * 2


def test_plan_matches_a_real_instantiation(tmp_path):
    from tiny_models import save_tiny_model

    folder = save_tiny_model("phi3", tmp_path / "phi3")
    plan = json.loads(CliRunner().invoke(main, ["plan", "--model", str(folder), "--json"]).stdout)
    assert plan["prunable_params"] == expected_prunable("phi3") and "qkv_proj" in plan["matrix_kinds"]


def test_plan_reports_structures_that_do_not_fit():
    result = CliRunner().invoke(main, ["plan", "--model", str(CONFIGS_DIR / "gemma-2-9b-it"), "--structure", "3:7",
                                       "--sparsity", "0.428571", "--json"])
    plan = json.loads(result.stdout)
    assert "does not fit" in plan["methods"]["magnitude"]


def test_plan_bad_input(tmp_path):
    result = CliRunner().invoke(main, ["plan", "--model", str(tmp_path), "--json"])
    assert result.exit_code == 2 and "cannot read the config" in result.stderr
    result = CliRunner().invoke(main, ["plan", "--model", str(CONFIGS_DIR / "gemma-2-9b-it"), "--structure", "2-4"])
    assert result.exit_code == 2 and "unknown structure" in result.stderr
