"""bench/gpu_check.py --tiny: the GPU check of the flagship command, shrunk to run on a CPU, so it cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_the_real_command_and_reports_every_stage(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    stages = [line["stage"] for line in lines]
    for stage in ("machine", "build model and data", "prune", "perplexity pruned", "perplexity dense", "srs pruned",
                  "srs dense", "latency", "whole command", "batch invariance", "device map auto", "total"):
        assert stage in stages, stage
    assert {line["method"] for line in lines if line["stage"] == "prune"} == {"wanda", "sparsegpt"}
    srs = next(line for line in lines if line["stage"] == "srs pruned")
    assert srs["replies"] == 5 * 5 * 3 and srs["batch"]["requested"] == "auto" and srs["batch"]["final"] >= 1
    assert (tmp_path / "work" / "hub").is_dir()  # published to the local Hub
    invariance = next(line for line in lines if line["stage"] == "batch invariance")
    assert invariance["differ"] == 0 and invariance["replies"] == 5 * 5 * 3 and invariance["decoding"] == "float32"
