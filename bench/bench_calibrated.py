"""Wanda and SparseGPT on SmolLM2-135M-Instruct (GGUF wheel, fp32, CPU): time, peak memory, scaling.

    $ .venv/bin/python bench/bench_calibrated.py                      # 32 × 512 and 64 × 512 tokens
    $ .venv/bin/python bench/bench_calibrated.py --samples 16 32 --seq-len 256 --repeat 1

Each (method, samples) runs in a fresh subprocess: load the model, sample calibration windows from the
local C4 file, reset the peak-RSS counter (`/proc/self/clear_refs` ← 5), prune, and read VmHWM from
/proc/self/status. So "peak" is the pruning's own high-water mark (the GGUF load's dequantisation peak is
excluded), and "extra" is that minus the RSS just before pruning (model + calibration ids). Times come from
the method's own breakdown: capture (embedding pass), forward (block forwards incl. stats hooks), prune
(masks / OBS solves). The ratio lines compare each size with the first: 2× tokens should give about
2× forward time (linear in tokens), not more; the prune time of Wanda does not depend on tokens, and
SparseGPT's only through the Hessian accumulation (inside forward).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
C4 = ROOT.parent / "shared" / "data" / "c4" / "c4-sample.00000-of-00001.json.gz"


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def child(method: str, samples: int, seq_len: int, budget: int, threads: int) -> None:
    sys.path.insert(0, str(ROOT))
    import torch

    if threads:
        torch.set_num_threads(threads)
    from publisher.demo_model import load_smollm2
    from publisher.prune import PruneRequest, get_method
    from publisher.prune.calibration import CalibrationSpec, load_calibration
    from publisher.prune.scope import prunable_linears

    model, tokenizer = load_smollm2("float32")
    ids = load_calibration(tokenizer, CalibrationSpec(C4, samples=samples, seq_len=seq_len)).input_ids
    layers = prunable_linears(model)
    request = PruneRequest(method, 0.5, calibration=ids, activation_budget_bytes=budget)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS from here on
    before = status_kib("VmRSS")
    start = time.perf_counter()
    with torch.no_grad():
        details = get_method(method).prune(model, layers, request, lambda layer: None)
    total = time.perf_counter() - start
    zeros = sum(int((x.module.weight == 0).sum()) for x in layers) / sum(x.module.weight.numel() for x in layers)
    print(json.dumps({"method": method, "samples": samples, "seq_len": seq_len, "total_s": round(total, 2),
                      **details, "rss_before_mib": before // 1024, "peak_mib": status_kib("VmHWM") // 1024,
                      "sparsity": zeros, "threads": torch.get_num_threads()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    parser.add_argument("--samples", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each configuration; the fastest is kept")
    parser.add_argument("--budget-mib", type=int, default=1024, help="activation_budget_bytes, in MiB")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "SAMPLES", "SEQ_LEN"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]), args.budget_mib << 20, args.threads)
        return
    if not C4.is_file():
        sys.exit(f"C4 sample absent: {C4}")
    print(f"SmolLM2-135M-Instruct fp32 on CPU, sparsity 0.5 unstructured, seq_len {args.seq_len}, "
          f"activation budget {args.budget_mib} MiB, threads {args.threads or 'default'}")
    header = (f"{'method':<10}{'samples':>8}{'tokens':>8}{'chunk':>6}{'capture s':>10}{'forward s':>10}"
              f"{'prune s':>9}{'total s':>9}{'RSS MiB':>9}{'peak MiB':>9}{'extra MiB':>10}{'run':>5}")
    print(header)
    best: dict[tuple[str, int], dict] = {}
    for rep in range(args.repeat):  # interleaved; the fastest run of each pair is kept (2 shared cores are noisy)
        for method in args.methods:
            for samples in args.samples:
                run = subprocess.run(
                    [sys.executable, __file__, "--budget-mib", str(args.budget_mib), "--threads", str(args.threads),
                     "--child", method, str(samples), str(args.seq_len)], capture_output=True, text=True, cwd=ROOT,
                )
                if run.returncode:
                    sys.exit(f"{method} {samples}: child failed\n{run.stderr[-3000:]}")
                r = json.loads(run.stdout.strip().splitlines()[-1])
                print(f"{method:<10}{samples:>8}{samples * args.seq_len:>8}{r['samples_per_chunk']:>6}"
                      f"{r['capture_s']:>10.2f}{r['forward_s']:>10.2f}{r['prune_s']:>9.2f}{r['total_s']:>9.2f}"
                      f"{r['rss_before_mib']:>9}{r['peak_mib']:>9}{r['peak_mib'] - r['rss_before_mib']:>10}"
                      f"{rep + 1:>5}", flush=True)
                key = (method, samples)
                if key not in best or r["total_s"] < best[key]["total_s"]:
                    best[key] = r
    results: dict[str, list[dict]] = {}
    for (method, _), r in best.items():
        results.setdefault(method, []).append(r)
    print("ratios (fastest run of each):")
    for method, runs in results.items():
        base = runs[0]
        base_extra = max(1, base["peak_mib"] - base["rss_before_mib"])
        for r in runs[1:]:
            tokens = r["samples"] / base["samples"]
            print(f"{method}: {tokens:g}× tokens → forward {r['forward_s'] / base['forward_s']:.2f}×, "
                  f"prune {r['prune_s'] / base['prune_s']:.2f}×, total {r['total_s'] / base['total_s']:.2f}×, "
                  f"extra memory {(r['peak_mib'] - r['rss_before_mib']) / base_extra:.2f}×")


if __name__ == "__main__":
    main()
