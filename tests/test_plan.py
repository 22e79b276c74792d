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


def _plan(model: str) -> dict:
    result = CliRunner().invoke(main, ["plan", "--model", str(CONFIGS_DIR / model), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_plan_counts_mixtral_8x7b_from_its_config():
    """Mixtral-8x7B: hidden 4096, intermediate 14336, 32 layers, 32 heads (head_dim 4096 / 32 = 128), 8 KV heads,
    8 experts, top-2, vocab 32000, untied embeddings."""
    h, inter, layers, kv_dim, experts, top_k, vocab = 4096, 14336, 32, 8 * 128, 8, 2, 32000
    attention = h * h + h * kv_dim + h * kv_dim + h * h  # q, k, v, o: 16,777,216 × 2 + 4,194,304 × 2
    assert attention == 41_943_040
    expert = 3 * h * inter  # w1 (gate), w3 (up): 14336 × 4096; w2 (down): 4096 × 14336
    assert expert == 176_160_768
    router, norms = experts * h, 2 * h  # block_sparse_moe.gate 8 × 4096; input/post-attention RMSNorm
    total = layers * (attention + experts * expert + router + norms) + 2 * vocab * h + h  # + embed, lm_head, norm
    assert total == 46_702_792_704  # the published "46.7B"
    active = total - layers * (experts - top_k) * expert
    assert active == 12_879_925_248  # the published "12.9B active"
    plan = _plan("Mixtral-8x7B-Instruct-v0.1")
    assert plan["total_params"] == total and plan["moe"]["active_params"] == active
    assert plan["prunable_params"] == layers * (attention + experts * expert) == 46_439_333_888
    assert plan["prunable_matrices"] == layers * (4 + 3 * experts) == 896
    kinds = plan["moe"]["prunable_by_kind"]
    assert kinds["attention"] == {"params": layers * attention, "matrices": 128, "bytes": 2 * layers * attention}
    assert kinds["routed expert"]["params"] == layers * experts * expert == 45_097_156_608
    assert "shared expert" not in kinds and plan["moe"]["router_params"] == layers * router == 1_048_576
    assert plan["moe"]["experts_per_layer"] == [8] and plan["moe"]["experts_per_token"] == [2]
    assert plan["matrix_kinds"]["experts.gate_proj"] == layers * experts == 256
    # streamed: two of the largest stored tensors, the 32000 × 4096 embedding (not a fused 3-D expert tensor)
    assert plan["streamed_memory_bytes"] == 2 * max(vocab * h, h * inter) * 2
    assert plan["methods"]["expert-drop"].startswith("ok") and plan["unsupported"] is None


def test_plan_counts_qwen3_30b_a3b_from_its_config():
    """Qwen3-30B-A3B: hidden 2048, moe_intermediate 768, 48 layers, 32 heads × head_dim 128 (q: 4096 wide), 4 KV
    heads, q/k RMSNorm of 128, 128 experts, top-8, vocab 151936, untied embeddings."""
    h, inter, layers, q_dim, kv_dim, head, experts, top_k, vocab = 2048, 768, 48, 32 * 128, 4 * 128, 128, 128, 8, \
        151936
    attention = h * q_dim + 2 * h * kv_dim + q_dim * h  # 8,388,608 + 2 × 1,048,576 + 8,388,608
    assert attention == 18_874_368
    expert = 3 * h * inter  # gate, up: 768 × 2048; down: 2048 × 768
    assert expert == 4_718_592
    router, norms = experts * h, 2 * h + 2 * head  # mlp.gate 128 × 2048; layer norms + q_norm, k_norm
    total = layers * (attention + experts * expert + router + norms) + 2 * vocab * h + h
    assert total == 30_532_122_624  # the published "30.5B"
    active = total - layers * (experts - top_k) * expert
    assert active == 3_353_032_704  # the published "3.3B activated"
    plan = _plan("Qwen3-30B-A3B")
    assert plan["total_params"] == total and plan["moe"]["active_params"] == active
    assert plan["prunable_params"] == layers * (attention + experts * expert) == 29_896_998_912
    assert plan["prunable_matrices"] == layers * (4 + 3 * experts) == 18_624
    kinds = plan["moe"]["prunable_by_kind"]
    assert kinds["attention"]["params"] == layers * attention == 905_969_664
    assert kinds["routed expert"] == {"params": 28_991_029_248, "matrices": 18_432, "bytes": 2 * 28_991_029_248}
    assert plan["moe"]["experts_per_token"] == [8] and plan["moe"]["router_params"] == layers * router
    assert plan["streamed_memory_bytes"] == 2 * vocab * h * 2  # the embedding, not a [128, 1536, 2048] tensor


def test_plan_of_a_dense_model_has_no_moe_section_and_no_expert_drop():
    plan = _plan("Mistral-7B-Instruct-v0.3")
    assert plan["moe"] is None and plan["methods"]["expert-drop"].startswith("not applicable")
