"""--device-map: accelerate places the layers; offloaded weights (CPU state dict, disk) are pruned and saved.

No GPU here, so the GPU/CPU split is exercised through the same accelerate mechanism on CPU: a device map
with "disk" entries (weights on "meta", read through the hook's loader, written back to the offload folder)
and `accelerate.cpu_offload` (weights in a CPU state dict, as for the "cpu" entries of a GPU map).
"""

import json

import pytest
import torch
from accelerate import cpu_offload
from click.testing import CliRunner
from safetensors.torch import load_file
from tiny_models import build_model, save_tiny_model

from publisher.cli import main
from publisher.hashing import sha256_file
from publisher.placement import input_device, parse_device_map, parse_max_memory
from publisher.prune import PruneRequest, prune_model
from publisher.results import read_results

DISK_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "disk",
            "model.layers.1": "cpu", "model.norm": "disk", "lm_head": "cpu"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("device-map")
    save_tiny_model("llama", root / "llama")
    (root / "disk-map.json").write_text(json.dumps(DISK_MAP))
    with open(root / "calib.jsonl", "w") as f:
        for i in range(12):
            f.write(json.dumps({"text": " ".join(f"w{(i * 7 + j * 3) % 126}" for j in range(60))}) + "\n")
    return root


def run(setup, out, *extra):
    return CliRunner().invoke(main, [
        "--model", str(setup / "llama"), "--sparsity", "0.5", "--dry-run", "-q", "--output-dir", str(out),
        "--calibration-dataset", str(setup / "calib.jsonl"), "--calibration-samples", "6",
        "--calibration-seq-len", "24", *extra])


def source_digests(folder):
    return {p.name: sha256_file(p) for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("method", ["magnitude", "random", "wanda", "sparsegpt"])
@pytest.mark.parametrize("placement", ["auto", "disk-map"])
def test_device_map_prunes_the_same_weights_as_one_device(setup, tmp_path, method, placement):
    """On CPU, `auto` keeps everything in memory; the disk map offloads a block: same saved weights either way."""
    before = source_digests(setup / "llama")
    plain = run(setup, tmp_path / "plain", "--method", method)
    assert plain.exit_code == 0, plain.output
    device_map = "auto" if placement == "auto" else str(setup / "disk-map.json")
    mapped = run(setup, tmp_path / "mapped", "--method", method, "--device-map", device_map)
    assert mapped.exit_code == 0, mapped.output

    expected, got = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "mapped" /
                                                                                    "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    results = read_results(tmp_path / "mapped" / "results.json")
    assert abs(results.sparsity.actual_sparsity - 0.5) < 0.02
    if placement == "disk-map":
        assert results.environment["placement"] == "cpu: 4, disk: 2"
        assert "device map `" in (tmp_path / "mapped" / "README.md").read_text()
    assert source_digests(setup / "llama") == before  # the base model's files were never written
    assert not (tmp_path / "mapped" / ".publish-pruned" / "offload").exists()


def test_auto_with_a_small_cpu_budget_offloads_to_disk_and_still_prunes_exactly(setup, tmp_path):
    result = run(setup, tmp_path / "run", "--device-map", "auto", "--max-memory", "cpu=40KB")
    assert result.exit_code == 0, result.output
    results = read_results(tmp_path / "run" / "results.json")
    assert "disk" in results.environment["placement"]
    assert results.sparsity.actual_sparsity == 0.5  # exact-k on every matrix, the offloaded ones included


def test_cpu_offloaded_state_dict_is_pruned_and_saved(tmp_path):
    """The mechanism of a GPU map's "cpu" entries: parameters on meta, weights in a CPU state dict."""
    reference = build_model("llama")
    prune_model(reference, PruneRequest("magnitude", 0.5), progress=False)
    model = build_model("llama")
    cpu_offload(model, execution_device=torch.device("cpu"))
    assert model.model.layers[0].mlp.down_proj.weight.device.type == "meta"
    record = prune_model(model, PruneRequest("magnitude", 0.5), progress=False)
    assert all(layer.zeros == layer.params // 2 for layer in record.layers)
    assert input_device(model) == torch.device("cpu")
    ids = torch.randint(0, 128, (2, 16))
    with torch.no_grad():  # the hooks bring the pruned weights in for the forward
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--device-map", "everywhere"], "--device-map must be one of auto, balanced"),
    (["--device-map", "auto", "--device", "cuda"], "either --device or --device-map"),
    (["--max-memory", "cpu=1GiB"], "--max-memory needs --device-map"),
    (["--device-map", "auto", "--max-memory", "cpu"], "DEVICE=SIZE"),
    (["--device-map", "auto", "--max-memory", "cpu=lots"], "'lots' is not a size"),
    (["--device-map", "auto", "--max-memory", "gpu0=1GiB"], "'gpu0' is not a device"),
])
def test_bad_placement_is_one_line(setup, tmp_path, args, message):
    result = run(setup, tmp_path / "run", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_a_map_naming_a_gpu_this_machine_lacks_is_one_line(setup, tmp_path):
    (tmp_path / "gpu.json").write_text(json.dumps({**DISK_MAP, "model.layers.0": 0}))
    for args in (["--device-map", str(tmp_path / "gpu.json")], ["--device-map", "auto", "--max-memory", "0=1GiB"]):
        result = run(setup, tmp_path / "run", *args)
        assert result.exit_code == 2 and "this machine has no CUDA device" in result.output, result.output
        assert "Traceback" not in result.output


def test_device_map_files_are_checked(tmp_path):
    bad = tmp_path / "map.json"
    for device in ("gpu", "cuda:0:1", "cuda:"):
        bad.write_text(json.dumps({"model.layers.0": device}))
        with pytest.raises(Exception, match=f"'{device}' is not a device"):
            parse_device_map(str(bad))
    bad.write_text("[1, 2]")
    with pytest.raises(Exception, match="expected a JSON object"):
        parse_device_map(str(bad))
    good = tmp_path / "good.json"
    good.write_text('{"model.layers.0": 0, "model.layers.1": "cuda:1", "lm_head": "disk"}')
    assert parse_device_map(str(good)) == {"model.layers.0": 0, "model.layers.1": "cuda:1", "lm_head": "disk"}
    assert parse_max_memory("0=70GiB, cpu=200GiB") == {0: "70GiB", "cpu": "200GiB"}


@pytest.mark.parametrize(("mapping", "message"), [
    ({**DISK_MAP, "model.layers.7": "cpu"}, "names 'model.layers.7', which is not a module of LlamaForCausalLM"),
    ({**DISK_MAP, "lm_head.weight": "disk"}, "names 'lm_head.weight', which is not a module"),
    ({k: v for k, v in DISK_MAP.items() if k != "model.norm"}, "places no module holding model.norm.weight"),
    ({"": "cpu", "model.layers.1": "disk"}, '"" (the whole model) must be the only entry'),
])
def test_a_map_that_does_not_fit_the_model_is_one_line(setup, tmp_path, mapping, message):
    (tmp_path / "map.json").write_text(json.dumps(mapping))
    result = run(setup, tmp_path / "run", "--device-map", str(tmp_path / "map.json"))
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output


def test_a_gguf_with_a_device_map_is_refused_before_any_work(tmp_path):
    result = CliRunner().invoke(main, ["--model", str(tmp_path / "m.gguf"), "--sparsity", "0.5", "--dry-run",
                                       "--device-map", "auto", "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and "a GGUF is dequantized on one device" in result.output
    assert not (tmp_path / "run").exists()


def test_settings_naming_absent_gpus_parse_so_a_release_grid_can_be_previewed():
    from publisher.settings import RunSettings

    settings = RunSettings(model="org/big", sparsity=0.5, device_map="auto", max_memory="0=70GiB,cpu=200GiB")
    assert settings.max_memory == "0=70GiB,cpu=200GiB"  # the devices are checked when a run starts
