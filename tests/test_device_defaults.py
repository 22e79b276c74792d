"""The GPU is used without asking: --device auto, the latency backend a device gets, evaluation batch sizes in
manifests. (The GPU paths themselves run in tests/test_accelerators.py and bench/gpu_check.py on a GPU machine.)"""

import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from tiny_models import save_tiny_model

from publisher.cli import main
from publisher.errors import PublishPrunedError
from publisher.measure import latency
from publisher.measure.latency import MLX_CPU_MAX_PARAMS, choose_backend
from publisher.placement import resolve_device
from publisher.release import parse_manifest
from publisher.results import read_results
from publisher.settings import RunSettings


def test_auto_is_the_first_cuda_gpu_when_present_else_the_cpu_never_mps(monkeypatch):
    assert RunSettings(model="m", sparsity=0.5).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # MPS stays untested: only when asked
    assert resolve_device("auto") == "cpu" == RunSettings(model="m", sparsity=0.5, device="auto").device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda" == RunSettings(model="m", sparsity=0.5, device="auto").device
    assert resolve_device("auto", device_map="auto") == "cpu"  # the map places every layer
    assert resolve_device("mps") == "mps" and resolve_device("cuda:1") == "cuda:1"


def test_the_main_command_prints_and_records_the_device_it_chose(tmp_path):
    model = save_tiny_model("llama", tmp_path / "base")
    result = CliRunner().invoke(main, ["run", "--model", str(model), "--sparsity", "0.5", "--dry-run",
                                       "--output-dir", str(tmp_path / "run"), "--base-model-id", "org/tiny"])
    assert result.exit_code == 0, result.output
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"device: {expected} (" in result.stderr and "chosen by --device auto" in result.stderr
    assert f"  device           {expected} (" in result.stdout
    assert read_results(tmp_path / "run" / "results.json").settings["device"] == expected


def test_latency_backend_follows_the_device_and_the_model_size(monkeypatch):
    monkeypatch.setattr(latency, "mlx_device", lambda: "CPU")  # mlx[cpu], as on Linux without a GPU backend
    small = choose_backend("auto", "cpu", 135_000_000)
    assert (small.backend, small.skip_reason) == ("mlx", None)
    big = choose_backend("auto", "cpu", 9_000_000_000)  # a 9B takes hours on MLX-CPU: say so, do not start it
    assert big.skip_reason is not None and "--latency-backend mlx" in big.skip_reason and "9.0 B" in big.skip_reason
    assert choose_backend("mlx", "cpu", 9_000_000_000).skip_reason is None  # the user asked
    gpu = choose_backend("auto", "cuda", 9_000_000_000)
    assert (gpu.backend, gpu.device) == ("torch", "cuda")  # labelled torch CUDA, never an MLX row
    monkeypatch.setattr(latency, "mlx_device", lambda: "CUDA")  # publish-pruned[cuda]: MLX's CUDA backend
    assert choose_backend("auto", "cuda", 9_000_000_000).backend == "mlx"
    monkeypatch.setattr(latency, "mlx_device", lambda: "Metal")
    assert choose_backend("auto", "cpu", 9_000_000_000).backend == "mlx"
    assert MLX_CPU_MAX_PARAMS == 1_000_000_000
    with pytest.raises(PublishPrunedError, match="--latency-backend must be one of auto, mlx, torch"):
        choose_backend("onnx", "cpu", 1)


def test_a_release_manifest_sets_the_measure_settings_of_every_artifact():
    grid = {"models": ["org/m"], "methods": ["magnitude"], "sparsities": [0.5],
            "evaluation": {"eval_batch_size": 32, "skip": ["latency"], "bbq_limit": 30}}
    settings = parse_manifest(grid).evaluation_settings()
    assert settings.eval_batch_size == "32" and settings.skip == frozenset({"latency"}) and settings.bbq_limit == 30
    assert parse_manifest({**grid, "evaluation": {}}).evaluation_settings().eval_batch_size == "auto"
    assert parse_manifest({k: v for k, v in grid.items() if k != "evaluation"}).evaluation_settings() is None
    as_text = parse_manifest({**grid, "evaluation": {"skip": "ppl, latency"}}).evaluation_settings()
    assert as_text.skip == frozenset({"ppl", "latency"})  # a comma string, as the CLI takes it
    with pytest.raises(PublishPrunedError, match="'evaluation' takes the measure settings"):
        parse_manifest({**grid, "evaluation": {"batch": 8}})
    with pytest.raises(PublishPrunedError, match="--eval-batch-size must be auto or a whole number"):
        parse_manifest({**grid, "evaluation": {"eval_batch_size": 0}})


def test_plan_estimates_each_stage_for_the_device_from_measured_anchors():
    from publisher.estimates import ANCHORS, estimate_stages, estimates_table

    gemma = {"total_params": 9_241_705_984, "prunable_params": 8_323_596_288}
    stages, basis = estimate_stages(**gemma, device="cuda", gpu_name="NVIDIA H200", method="wanda")
    by_name = {s.stage: s.seconds for s in stages}
    scale = gemma["total_params"] / ANCHORS["H200"].params
    # the protocol's 60,740 replies per model at the measured 615 replies/s of an 8.5 B model, twice (dense + pruned)
    assert by_name["SRS on BBQ, pruned + dense"] == pytest.approx(2 * 60_740 / 615 * scale)
    assert by_name["prune (wanda)"] == pytest.approx(4 * 9.2 * scale)  # 128 x 2048 tokens, measured at 32 x 2048
    assert "H200" in basis and "issue 18" in basis
    h100, _ = estimate_stages(**gemma, device="cuda", gpu_name="NVIDIA H100 80GB HBM3")
    assert h100[1].seconds > stages[1].seconds  # slower memory, longer estimate
    cpu, cpu_basis = estimate_stages(**gemma, device="cpu", cpu_cores=2)
    assert cpu[-1].stage == "latency" and "skipped" in cpu[-1].note and "2 CPU cores" in cpu_basis
    assert estimate_stages(**gemma, device="mps")[0] == []  # untested: no estimate
    assert "SRS on BBQ" in estimates_table(stages, basis)


def test_plan_prints_the_device_and_the_estimates(tmp_path):
    config = Path(__file__).parent / "fixtures" / "configs" / "gemma-2-9b-it"
    result = CliRunner().invoke(main, ["plan", "--model", str(config), "--method", "wanda", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "  device             cpu\n" in result.stdout and "time estimate      rough" in result.stdout
    assert "prune (wanda)" in result.stdout and "latency" in result.stdout and "skipped" in result.stdout


def test_a_preview_builds_what_fits_and_only_plans_what_does_not(tmp_path):
    mixtral = Path(__file__).parent / "fixtures" / "configs" / "Mixtral-8x7B-Instruct-v0.1"  # 93 GB of bf16
    tiny = save_tiny_model("llama", tmp_path / "tiny")
    manifest = tmp_path / "release.yaml"
    manifest.write_text(yaml.safe_dump({"namespace": "lab", "models": [str(mixtral), str(tiny)],
                                        "methods": ["magnitude"], "sparsities": [0.5]}))
    result = CliRunner().invoke(main, ["release", str(manifest), "--preview", "--output-root", str(tmp_path / "runs"),
                                       "--json"])
    assert result.exit_code == 0, result.output
    by_model = {a["model"]: a for a in json.loads(result.stdout)["artifacts"]}
    planned, built = by_model[str(mixtral)], by_model[str(tiny)]
    assert planned["status"] == "planned" and "not built here: needs" in planned["plan"]
    assert "46,702,792,704" in planned["plan"] and "time estimate" in planned["plan"]  # config-only counts
    assert built["status"] == "dry-run" and (tmp_path / "runs" / "tiny-magnitude-s50" / "README.md").is_file()
