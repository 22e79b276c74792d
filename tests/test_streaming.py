"""Streamed per-matrix pruning: file to file, the same tensors and files as load → prune → save_pretrained."""

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny_models import CONFIGS, add_remote_code, save_tiny_model
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


def test_streamed_files_are_byte_identical_to_save_pretrained_with_many_layers(tmp_path):
    """Twelve blocks: the safetensors library orders names as strings (layers.10 before layers.2)."""
    from transformers.models.llama import LlamaConfig

    from publisher.hashing import sha256_file

    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=12,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    source = tmp_path / "source"
    AutoModelForCausalLM.from_config(config).save_pretrained(source)
    from tiny_models import tiny_tokenizer

    tiny_tokenizer().save_pretrained(source)
    request = PruneRequest("random", 0.5)
    for shard_size in ("5GB", "40KB"):
        streamed = stream_prune(source, tmp_path / f"s{shard_size}", request, dtype="auto", shard_size=shard_size,
                                progress=False)
        loaded_path(source, tmp_path / f"l{shard_size}", request, shard_size=shard_size)
        weight_files = [f for f in streamed.files if "safetensors" in f]
        assert (weight_files == ["model.safetensors"]) == (shard_size == "5GB")  # 40KB: shards + index
        for name in weight_files:
            assert sha256_file(tmp_path / f"s{shard_size}" / name) == sha256_file(tmp_path / f"l{shard_size}" / name)


def test_checkpoints_the_load_path_would_change_are_not_streamed(tmp_path):
    source = save_tiny_model("gemma2", tmp_path / "source")  # ties lm_head to the embedding
    weights = load_file(source / "model.safetensors")
    save_file({**weights, "lm_head.weight": weights["model.embed_tokens.weight"].clone()},
              source / "model.safetensors", metadata={"format": "pt"})
    request = PruneRequest("magnitude", 0.5)
    with pytest.raises(NotStreamable, match="stores tied weight lm_head.weight"):
        stream_prune(source, tmp_path / "a", request, dtype="auto", shard_size="5GB", progress=False)
    (source / "generation_config.json").unlink()
    with pytest.raises(NotStreamable, match="no generation_config.json"):
        stream_prune(source, tmp_path / "b", request, dtype="auto", shard_size="5GB", progress=False)


def test_a_git_lfs_pointer_is_a_one_line_error(tmp_path):
    source = save_tiny_model("llama", tmp_path / "source")
    (source / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 9\n")
    with pytest.raises(NotStreamable, match="not a safetensors file"):
        stream_prune(source, tmp_path / "a", PruneRequest("magnitude", 0.5), dtype="auto", shard_size="5GB",
                     progress=False)
    result = CliRunner().invoke(main, ["--model", str(source), "--sparsity", "0.5", "--dry-run", "-q",
                                       "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "Traceback" not in result.output


def test_custom_code_never_runs_without_trust_remote_code(tmp_path):
    """transformers would ask on stdin when trust_remote_code is None; the answer 'y' must not matter."""
    source = save_tiny_model("llama", tmp_path / "source")
    marker = tmp_path / "custom-code-ran"
    (source / "configuration_my.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from transformers import LlamaConfig\n\nclass MyConfig(LlamaConfig):\n    model_type = 'my-llama'\n")
    config = json.loads((source / "config.json").read_text())
    config.update(model_type="my-llama", auto_map={"AutoConfig": "configuration_my.MyConfig"})
    (source / "config.json").write_text(json.dumps(config))
    result = CliRunner().invoke(main, ["--model", str(source), "--sparsity", "0.5", "--dry-run", "-q",
                                       "--output-dir", str(tmp_path / "run")], input="y\ny\ny\n")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert not marker.exists()
    plan = CliRunner().invoke(main, ["plan", "--model", str(source)], input="y\ny\ny\n")  # reads the config too
    assert plan.exit_code == 2 and "Traceback" not in plan.output, plan.output
    assert not marker.exists()


@pytest.mark.parametrize("header", [
    b"[1, 2]", b'{"w": "x"}', b'{"w": {"dtype": "F32", "shape": [2]}}',
    b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]}}',
    b'{"w": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}',
    b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8]}}',
    b'{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}',
])
def test_malformed_headers_are_safetensors_errors(tmp_path, header):
    import struct

    from publisher.safetensors_io import SafetensorsError, read_index

    header += b" " * (-len(header) % 8)
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    with pytest.raises(SafetensorsError):
        read_index(tmp_path / "x.safetensors")


def test_non_ascii_names_are_written_as_the_library_writes_them(tmp_path):
    from publisher.safetensors_io import TensorEntry, plan_shards, write_shards

    values = {"gewicht.ä": torch.arange(4, dtype=torch.float32), "b": torch.ones(2, dtype=torch.bfloat16)}
    save_file(values, tmp_path / "reference.safetensors", metadata={"format": "pt"})
    entries = [TensorEntry(n, t.dtype, tuple(t.shape)) for n, t in values.items()]
    write_shards(tmp_path / "ours", plan_shards(entries, "1GB"), lambda e: values[e.name])
    assert (tmp_path / "ours" / "model.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_a_model_with_its_own_code_is_not_streamed(tmp_path):
    """save_pretrained copies modeling_*.py beside the weights; the streamed path would publish without it."""
    source = add_remote_code(save_tiny_model("llama", tmp_path / "source"))
    with pytest.raises(NotStreamable, match="own code"):
        stream_prune(source, tmp_path / "out", PruneRequest("magnitude", 0.5), dtype="auto", shard_size="5GB",
                     trust_remote_code=True, progress=False)
