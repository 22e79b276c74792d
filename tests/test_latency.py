"""MLX latency stage: statistics, interleaving, the cannot-run paths, bad settings, and the MLX-vs-torch cross-check."""

import dataclasses
import importlib.util
import json
import math
import random
import shutil
import sys

import numpy as np
import pytest
import torch
from tiny_models import CONFIGS, SHARED, STORIES, save_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from publisher.errors import SettingsError
from publisher.measure.latency import (
    BUILTIN_PROMPTS,
    LatencyComparison,
    LatencySettingsError,
    latency_table,
    measure_latency,
    measure_model_latency,
    mlx_config_overrides,
    ratio_estimate,
)
from publisher.measure.mlx_ppl import mlx_perplexity

HAS_MLX = importlib.util.find_spec("mlx") is not None and importlib.util.find_spec("mlx_lm") is not None
needs_mlx = pytest.mark.skipif(not HAS_MLX, reason="mlx / mlx-lm not installed (Linux: pip install 'mlx[cpu]' mlx-lm)")
needs_stories = pytest.mark.skipif(not STORIES.is_dir(), reason=f"stories260K not found at {STORIES} "
                                   "(set PUBLISH_PRUNED_SHARED to the shared folder)")
TULU = SHARED / "data" / "tulu" / "sft_sample.jsonl"


def _copy(src, dst, **config_changes):
    shutil.copytree(src, dst)
    if config_changes:
        config = json.loads((dst / "config.json").read_text()) | config_changes
        (dst / "config.json").write_text(json.dumps(config))
    return dst


# ------------------------------------------------------------------------------------------- bad settings


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_items=0), "n_items"),
    (dict(n_items=-3), "n_items"),
    (dict(max_tokens=0), "max_tokens"),
    (dict(max_tokens=513), "max_tokens"),
    (dict(warmup=-1), "warmup"),
    (dict(prompts=[]), "empty"),
    (dict(prompts=["ok", ""]), "prompt 1"),
    (dict(prompts=[[{"role": "user"}]]), "prompt 0"),
    (dict(prompts="just one string"), "list"),
    (dict(backend="onnx"), "backend"),
])
def test_bad_settings_raise_before_loading(tmp_path, kwargs, words):
    with pytest.raises(LatencySettingsError, match=words) as raised:
        measure_latency(tmp_path / "absent", tmp_path / "absent", **kwargs)
    assert isinstance(raised.value, SettingsError)
    with pytest.raises(LatencySettingsError):
        measure_model_latency(tmp_path / "absent", **kwargs)


# ------------------------------------------------------------------------------------------- cannot run


@needs_mlx
@needs_stories
def test_unknown_architecture_is_not_measured_and_named(tmp_path):
    odd = _copy(STORIES, tmp_path / "odd", model_type="not-a-model", architectures=["NotAModelForCausalLM"])
    result = measure_latency(STORIES, odd, n_items=2, max_tokens=2, warmup=0)
    assert not result.measured and result.ratio is None and result.pruned is None
    assert "dense model" in result.reason and "'not-a-model'" in result.reason
    assert "NotAModelForCausalLM" in result.reason
    assert latency_table(result).startswith("Latency: not measured — dense model")
    json.dumps(dataclasses.asdict(result))


def test_missing_folder_is_not_measured(tmp_path):
    result = measure_model_latency(tmp_path / "absent", n_items=1)
    assert not result.measured and result.reason == f"{tmp_path / 'absent'}: no such folder"


@needs_stories
def test_mlx_not_importable_is_not_measured(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlx.core", None)
    result = measure_latency(STORIES, STORIES, n_items=1)
    assert not result.measured and "MLX is not available" in result.reason
    assert result.machine.backend == "mlx"


# ------------------------------------------------------------------------------------------- statistics


@needs_mlx
@needs_stories
def test_stats_order_and_table_on_stories(tmp_path):
    pruned = _copy(STORIES, tmp_path / "pruned")
    result = measure_latency(pruned, STORIES, n_items=4, max_tokens=3, warmup=1, seed=3)
    assert isinstance(result, LatencyComparison) and result.measured, result.reason
    items = result.settings.items
    assert len(items) == 4 == result.settings.n_items and len(set(items)) == 4
    assert items == random.Random(3).sample(range(len(BUILTIN_PROMPTS)), 4)  # the seeded sample
    assert result.settings.prompts == f"built-in ({len(BUILTIN_PROMPTS)})"
    # warm-up first, then both models per item, the order alternating: pruned, dense | dense, pruned | ...
    steps = [(s.model, s.item, s.warmup) for s in result.order]
    assert steps[:2] == [("pruned", items[0], True), ("dense", items[0], True)]
    assert steps[2:] == [(m, i, False) for k, i in enumerate(items)
                         for m in (("pruned", "dense") if k % 2 == 0 else ("dense", "pruned"))]
    for stats, folder in ((result.pruned, pruned), (result.dense, STORIES)):
        assert stats.folder == str(folder) and stats.architecture == "'llama' (LlamaForCausalLM)"
        assert stats.n_items == 4 and len(stats.latencies_s) == 4 and stats.max_tokens == 3
        assert stats.warmup == 1 and len(stats.warmup_s) == 1 and stats.warmup_s[0] > 0
        assert stats.dtype == "float32"
        assert 0 < stats.min_s <= stats.median_s <= stats.p95_s <= stats.max_s
        assert stats.min_s <= stats.mean_s <= stats.max_s
        assert stats.mean_s == pytest.approx(np.mean(stats.latencies_s))
        assert stats.std_s == pytest.approx(np.std(stats.latencies_s, ddof=1))
        assert stats.prompt_tokens_per_s > 0 and stats.generation_tokens_per_s > 0
        assert stats.prompt_tokens_mean > 20  # BBQ-shaped prompts, not a few words
        assert 0 < stats.weights_bytes < stats.peak_memory_bytes < 50 * 2**20  # 260K fp32 params ≈ 1 MB
    r = result.ratio
    assert r.value == pytest.approx(result.pruned.mean_s / result.dense.mean_s)
    assert r.ci95_low is None and r.ci95_high is None and r.paired_std >= 0  # 4 items: no interval
    assert any("no 95 % interval" in note for note in result.notes)
    m = result.machine
    assert m.backend == "mlx" and m.backend_version and m.mlx_lm_version and m.device in ("Metal", "CPU", "CUDA")
    assert m.chip and m.os
    data = json.loads(json.dumps(dataclasses.asdict(result)))
    assert data["order"][0] == {"model": "pruned", "item": items[0], "warmup": True}
    table = latency_table(result)
    assert "pruned / dense mean latency" in table and "p95 s" in table and "stage wall time" in table
    assert "no interval from 4 items" in table and "exactly 3 new tokens (EOS ignored)" in table
    assert table.splitlines()[2].startswith("pruned") and table.splitlines()[3].startswith("dense")


@needs_mlx
@needs_stories
def test_single_model_with_given_prompts_and_torch_label():
    prompts = ["Once upon a time, a little dog", [{"role": "user", "content": "Tom had a red ball."}]]
    one = measure_model_latency(STORIES, prompts, n_items=5, max_tokens=1, warmup=0)
    assert one.measured, one.reason
    assert one.settings.n_items == 2 and one.settings.prompts == "given (2)"
    assert any("only 2 prompts" in n for n in one.notes)
    assert one.stats.generation_tokens_per_s is None  # one token: no decode step
    assert [s.model for s in one.order] == ["model", "model"]
    torch_run = measure_model_latency(STORIES, prompts, n_items=2, max_tokens=2, warmup=0, backend="torch")
    assert torch_run.measured and torch_run.machine.backend == "torch"
    assert torch_run.stats.peak_memory_bytes is None
    assert latency_table(torch_run).startswith("Latency (torch")


@needs_mlx
@needs_stories
def test_generation_failure_names_the_model_and_does_not_raise(tmp_path, monkeypatch):
    from publisher.measure import latency

    real = latency._MLXRunner.generate

    def flaky(self, ids, max_tokens, mode="fixed"):
        if self.label == "pruned":
            raise RuntimeError("[metal] out of wired memory")
        return real(self, ids, max_tokens, mode)

    monkeypatch.setattr(latency._MLXRunner, "generate", flaky)
    result = measure_latency(STORIES, STORIES, n_items=np.int64(2), max_tokens=2, warmup=0)
    assert not result.measured and result.reason == "pruned model: RuntimeError: [metal] out of wired memory"
    assert result.settings.n_items_requested == 2 and type(result.settings.n_items_requested) is int


def test_ratio_estimate_is_paired_and_seeded():
    dense = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    same = ratio_estimate(dense, dense)
    assert same.value == same.ci95_low == same.ci95_high == same.paired_median == 1.0 and same.paired_std == 0
    half = ratio_estimate([0.5 * d for d in dense], dense, seed=1)
    assert half.value == pytest.approx(0.5) and half.ci95_high == pytest.approx(0.5)
    pruned = [1.1, 1.9, 3.3, 3.8, 5.2, 6.4, 6.6, 8.3, 8.8, 10.4]
    noisy = ratio_estimate(pruned, dense, seed=7)
    assert noisy == ratio_estimate(pruned, dense, seed=7)
    assert noisy.ci95_low < noisy.value < noisy.ci95_high


def test_no_interval_is_printed_from_fewer_than_ten_items():
    few = ratio_estimate([1.1, 1.9, 3.3, 3.8], [1.0, 2.0, 3.0, 4.0], seed=7)
    assert few.value == pytest.approx(10.1 / 10) and few.ci95_low is None and few.ci95_high is None


@needs_mlx
@needs_stories
@pytest.mark.parametrize("backend", ["mlx", "torch"])
def test_study_mode_samples_and_stops_at_eos_and_says_so(backend):
    prompts = ["Once upon a time, a little dog", "Tom had a red ball."]
    fixed = measure_model_latency(STORIES, prompts, n_items=2, max_tokens=40, warmup=0, backend=backend)
    study = measure_model_latency(STORIES, prompts, n_items=2, max_tokens=40, warmup=0, backend=backend,
                                  mode="study")
    assert fixed.measured and study.measured, (fixed.reason, study.reason)
    assert fixed.settings.mode == "fixed" and study.settings.mode == "study" and study.stats.mode == "study"
    assert fixed.stats.generated_tokens_mean == 40  # EOS ignored: always the same work
    assert 1 <= study.stats.generated_tokens_mean <= 40
    assert "stopping at EOS" in latency_table(study) and any("study mode" in n for n in study.notes)
    again = measure_model_latency(STORIES, prompts, n_items=2, max_tokens=40, warmup=0, backend=backend,
                                  mode="study")
    assert again.stats.generated_tokens_mean == study.stats.generated_tokens_mean  # seeded


def test_an_unknown_latency_mode_is_refused():
    with pytest.raises(LatencySettingsError, match="--latency-mode must be one of fixed, study"):
        measure_model_latency(STORIES, None, mode="sampled")


def test_config_overrides_translate_transformers5_rope():
    flat = {"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
    assert mlx_config_overrides(flat) == {"rope_theta": 100000.0}
    llama3 = {"rope_parameters": {"rope_theta": 5e5, "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    out = mlx_config_overrides(llama3)
    assert out["rope_theta"] == 5e5 and out["rope_scaling"]["rope_type"] == "llama3"
    assert out["rope_scaling"]["factor"] == 8.0 and "rope_theta" not in out["rope_scaling"]
    per_layer = {"rope_parameters": {"full_attention": {"rope_theta": 1e6, "rope_type": "default"},
                                     "sliding_attention": {"rope_theta": 1e4, "rope_type": "default"}}}
    assert mlx_config_overrides(per_layer) == {"rope_theta": 1e6, "rope_local_base_freq": 1e4}
    assert mlx_config_overrides({"rope_theta": 10000.0, "rope_parameters": {"rope_theta": 1.0}}) == {}
    assert mlx_config_overrides({"model_type": "llama"}) == {}


# ------------------------------------------------------------------------------------------- MLX vs torch


def _rows(tokenizer, n_rows=8, seq_len=128) -> torch.Tensor:
    """n_rows x seq_len tokens of the tulu sample's message contents (or a fixed story when it is absent)."""
    texts = ([m["content"] for line in TULU.read_text().splitlines() for m in json.loads(line)["messages"]]
             if TULU.is_file() else ["Once upon a time there was a little girl who liked to play in the park. "] * 50)
    ids: list[int] = []
    for text in texts:
        ids += tokenizer.encode(text)
        if len(ids) >= n_rows * seq_len:
            break
    return torch.tensor(ids[:n_rows * seq_len]).view(n_rows, seq_len)


def _torch_ppl(folder, rows) -> float:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(rows).logits[:, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1))
    return math.exp(nll.item())


@needs_mlx
@needs_stories
def test_mlx_perplexity_matches_torch_on_stories():
    rows = _rows(AutoTokenizer.from_pretrained(STORIES))
    assert mlx_perplexity(STORIES, rows) == pytest.approx(_torch_ppl(STORIES, rows), rel=0.01)
    assert mlx_perplexity(STORIES, rows.numpy()) == pytest.approx(_torch_ppl(STORIES, rows), rel=0.01)


@needs_mlx
@needs_stories
def test_mlx_reads_transformers5_rope_parameters_and_shards(tmp_path):
    """transformers 5 saves `rope_parameters`; without translation mlx-lm would run RoPE at its default 10000."""
    tokenizer = AutoTokenizer.from_pretrained(STORIES)
    rows = _rows(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(STORIES, dtype=torch.bfloat16)
    model.config.rope_parameters["rope_theta"] = 100000.0
    model.save_pretrained(tmp_path, max_shard_size="300KB")
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "rope_theta" not in config and config["rope_parameters"]["rope_theta"] == 100000.0
    assert (tmp_path / "model.safetensors.index.json").is_file()
    torch_ppl = _torch_ppl(tmp_path, rows)
    assert abs(torch_ppl / _torch_ppl(STORIES, rows) - 1) > 0.02  # the changed RoPE base matters on these rows
    assert mlx_perplexity(tmp_path, rows) == pytest.approx(torch_ppl, rel=0.01)


@needs_mlx
@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_mlx_perplexity_matches_torch_on_tiny_models(tmp_path, arch):
    folder = save_tiny_model(arch, tmp_path / arch)
    rows = torch.from_numpy(np.random.default_rng(0).integers(0, 128, size=(4, 32)))
    assert mlx_perplexity(folder, rows) == pytest.approx(_torch_ppl(folder, rows), rel=0.01)


@needs_stories
def test_mlx_perplexity_rejects_bad_rows():
    for bad in (np.zeros(5, dtype=np.int64), np.zeros((2, 1), dtype=np.int64), np.zeros((2, 4), dtype=np.float32)):
        with pytest.raises(LatencySettingsError):
            mlx_perplexity(STORIES, bad)
