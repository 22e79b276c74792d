"""Streamed per-matrix pruning: file to file, the same tensors and files as load → prune → save_pretrained."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import CONFIGS, save_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from publisher.cli import main
from publisher.model_io import save_checkpoint
from publisher.prune import PruneRequest, prune_model
from publisher.prune.streaming import NotStreamable, stream_prune
from publisher.results import read_results
from publisher.safetensors_io import TensorEntry, plan_shards, write_shards


def tensors(folder):
    found = {}
    for path in sorted(folder.glob("*.safetensors")):
        found.update(load_file(path))
    return found


def loaded_path(source, out, request, dtype="auto", shard_size="5GB"):
    model = AutoModelForCausalLM.from_pretrained(source, dtype="auto" if dtype == "auto" else getattr(torch, dtype))
    prune_model(model, request, progress=False)
    save_checkpoint(model, AutoTokenizer.from_pretrained(source), out, shard_size=shard_size)


@pytest.mark.parametrize("arch", sorted(CONFIGS))
@pytest.mark.parametrize(("method", "structure"), [("magnitude", "unstructured"), ("random", "unstructured"),
                                                   ("magnitude", "2:4"), ("random", "2:4")])
def test_streamed_equals_loaded(tmp_path, arch, method, structure):
    source = save_tiny_model(arch, tmp_path / "source")
    request = PruneRequest(method, 0.5, structure=structure)
    streamed = stream_prune(source, tmp_path / "streamed", request, dtype="auto", shard_size="5GB", progress=False)
    loaded_path(source, tmp_path / "loaded", request)
    a, b = tensors(tmp_path / "streamed"), tensors(tmp_path / "loaded")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert streamed.files == sorted(p.name for p in (tmp_path / "loaded").iterdir())
    for name in ("config.json", "generation_config.json"):
        assert json.loads((tmp_path / "streamed" / name).read_text()) == json.loads((tmp_path / "loaded" /
                                                                                     name).read_text())
    assert all(layer.zeros == torch.count_nonzero(a[layer.name] == 0) for layer in streamed.record.layers)


def test_streamed_shards_and_casts_like_save_pretrained(tmp_path):
    source = save_tiny_model("llama", tmp_path / "source")
    request = PruneRequest("magnitude", 0.5)
    streamed = stream_prune(source, tmp_path / "streamed", request, dtype="bfloat16", shard_size="20KB",
                            progress=False)
    loaded_path(source, tmp_path / "loaded", request, dtype="bfloat16", shard_size="20KB")
    assert "model.safetensors.index.json" in streamed.files and streamed.dtype == "bfloat16"
    assert streamed.files == sorted(p.name for p in (tmp_path / "loaded").iterdir())
    index = [json.loads((tmp_path / d / "model.safetensors.index.json").read_text()) for d in ("streamed", "loaded")]
    assert index[0]["weight_map"] == index[1]["weight_map"]
    a, b = tensors(tmp_path / "streamed"), tensors(tmp_path / "loaded")
    assert all(a[k].dtype == torch.bfloat16 and torch.equal(a[k], b[k]) for k in b)


def test_writer_aligns_mixed_dtypes_and_odd_sizes(tmp_path):
    values = {"a": torch.arange(3, dtype=torch.int8), "b": torch.randn(5, dtype=torch.float64),
              "c": torch.randn(3, 3).bfloat16(), "d": torch.tensor([True, False]), "e": torch.randn(7)}
    entries = [TensorEntry(n, t.dtype, tuple(t.shape)) for n, t in values.items()]
    names = write_shards(tmp_path, plan_shards(entries, "1GB"), lambda e: values[e.name])
    assert names == ["model.safetensors"]
    back = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(back[n], t) for n, t in values.items())
    with safe_open(tmp_path / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_a_checkpoint_transformers_converts_is_not_streamed(tmp_path):
    source = save_tiny_model("llama", tmp_path / "source")
    weights = load_file(source / "model.safetensors")
    weights["model.layers.0.mlp.legacy_scale"] = torch.ones(3)  # a tensor the model does not own
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NotStreamable, match="legacy_scale"):
        stream_prune(source, tmp_path / "out", PruneRequest("magnitude", 0.5), dtype="auto", shard_size="5GB",
                     progress=False)


def test_the_pipeline_streams_per_matrix_methods_and_loads_for_the_rest(tmp_path):
    source = save_tiny_model("llama", tmp_path / "source")
    placements = {}
    for method in ("magnitude", "wanda"):
        out = tmp_path / method
        (tmp_path / "calib.jsonl").write_text("".join(
            json.dumps({"text": " ".join(f"w{(i + j) % 126}" for j in range(40))}) + "\n" for i in range(8)))
        result = CliRunner().invoke(main, ["--model", str(source), "--sparsity", "0.5", "--method", method,
                                           "--dry-run", "-q", "--output-dir", str(out), "--calibration-dataset",
                                           str(tmp_path / "calib.jsonl"), "--calibration-samples", "4",
                                           "--calibration-seq-len", "16"])
        assert result.exit_code == 0, result.output
        results = read_results(out / "results.json")
        placements[method] = results.environment["placement"]
        assert results.sparsity.actual_sparsity == pytest.approx(0.5, abs=1e-4)
    assert placements == {"magnitude": "streamed from safetensors, one tensor at a time (cpu)", "wanda": "cpu"}


def test_a_checkpoint_missing_a_weight_is_not_streamed(tmp_path):
    """transformers would initialise the missing tensor and save it: only the load path reproduces that."""
    source = save_tiny_model("llama", tmp_path / "source")
    weights = load_file(source / "model.safetensors")
    del weights["model.norm.weight"]
    save_file(weights, source / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(NotStreamable, match="lacks model.norm.weight"):
        stream_prune(source, tmp_path / "out", PruneRequest("magnitude", 0.5), dtype="auto", shard_size="5GB",
                     progress=False)


@pytest.mark.parametrize("n", [0, 5, 1023, 1024, 1025, 3 * 1024 * 128 + 7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.int8])
def test_zeros_in_counts_like_eq_sum(n, dtype):
    from publisher.prune.sparsity import zeros_in

    values = (torch.randn(n, generator=torch.Generator().manual_seed(n)) * 2).round().to(dtype)
    if dtype.is_floating_point and n > 2:
        values[0], values[1] = -0.0, float("nan")
    assert zeros_in(values) == int((values == 0).sum())


def test_reader_reads_files_written_by_safetensors_whole_and_by_rows(tmp_path):
    from publisher.safetensors_io import read_index, read_tensor

    values = {"w": torch.randn(37, 5).bfloat16(), "b": torch.arange(6, dtype=torch.int64), "s": torch.tensor(2.5)}
    save_file(values, tmp_path / "x.safetensors")
    stored = read_index(tmp_path / "x.safetensors")
    with open(tmp_path / "x.safetensors", "rb") as f:
        assert all(torch.equal(read_tensor(f, stored[n]), t) for n, t in values.items())
        assert torch.equal(read_tensor(f, stored["w"], rows=(30, 99)), values["w"][30:])
        assert torch.equal(read_tensor(f, stored["w"], rows=(3, 7)), values["w"][3:7])
