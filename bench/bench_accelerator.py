"""Pruning on an accelerator (CUDA; MPS where present): magnitude, Wanda/SparseGPT scaling, a GPU + CPU device map.

    python bench/bench_accelerator.py                       # every section on the GPU (skips without one)
    python bench/bench_accelerator.py --sections magnitude --device cpu --layers 2   # a quick try anywhere

Every figure is a ratio against a baseline measured in this run on this device:
- magnitude: our exact-k prune of the prunable matrices of a synthetic bf16 Llama (the layout of
  bench_magnitude.py) against one read+write pass (`clone()` of each matrix), and the study's full sort against
  our prune; zeros are checked to equal k for every matrix;
- calibrated: Wanda and SparseGPT on the SmolLM2-135M architecture (its config; random fp32 weights, since the
  real checkpoint does not travel to a device machine; timings do not depend on the weights' values) with
  random calibration ids, at two calibration sizes: 2× tokens should cost about 2× forward time; the peak is
  the accelerator's `max_memory_allocated` during the prune;
- device-map: the tool (CLI, dry run) prunes the synthetic Llama with Wanda on one device, then with
  `--device-map auto --max-memory 0=<budget>` so that only some blocks fit on the GPU and accelerate offloads
  the rest to CPU memory: wall time ratio, the modules each device held, and mask agreement per matrix.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

# SmolLM2-135M-Instruct's architecture (its config.json), as bench_calibrated.py prunes it on the CPU.
SMOLLM2 = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
               num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
               tie_word_embeddings=True, rms_norm_eps=1e-5)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def best_time(fn, device: torch.device, repeats: int, setup=lambda: None) -> float:
    """Fastest of `repeats` runs of fn(setup()), synchronised so the kernels' time is counted."""
    best = math.inf
    for _ in range(repeats):
        state = setup()
        sync(device)
        start = time.perf_counter()
        fn(state)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def magnitude(device: torch.device, layers: int) -> None:
    from bench_magnitude import HIDDEN, INTERMEDIATE

    from publisher.prune.masks import prune_smallest_magnitude_
    from publisher.prune.sparsity import zeros_in

    generator = torch.Generator(device=device).manual_seed(0)
    shapes = [(HIDDEN, HIDDEN)] * 4 + [(INTERMEDIATE, HIDDEN)] * 2 + [(HIDDEN, INTERMEDIATE)]
    weights = [torch.randn(s, generator=generator, device=device, dtype=torch.bfloat16) * 0.02
               for _ in range(layers) for s in shapes]
    ks = [w.numel() // 2 for w in weights]

    def prune(work):
        for w, k in zip(work, ks, strict=True):
            prune_smallest_magnitude_(w, k)

    def full_sort(work):  # the study: sort |W|, take the k-th value, zero everything at or below it
        for w, k in zip(work, ks, strict=True):
            threshold = torch.sort(w.abs().flatten()).values[k - 1]
            w.masked_fill_(w.abs() <= threshold, 0)

    copies = lambda: [w.clone() for w in weights]  # noqa: E731
    prune(copies())  # warm-up: kernels compiled, allocator primed
    clone_s = best_time(lambda _: [w.clone() for w in weights], device, 5)
    prune_s = best_time(prune, device, 5, copies)
    sort_s = best_time(full_sort, device, 3, copies)
    work = copies()
    prune(work)
    exact = all(zeros_in(w) == k for w, k in zip(work, ks, strict=True))
    n = sum(w.numel() for w in weights)
    print(f"[magnitude] {len(weights)} bf16 matrices, {n / 1e6:.0f} M weights on {device}")
    print(f"  one read+write pass (clone, best of 5) {clone_s * 1e3:9.2f} ms")
    print(f"  exact-k prune (best of 5)              {prune_s * 1e3:9.2f} ms → prune / read+write = "
          f"{prune_s / clone_s:5.1f}× (target ≤ 2×) {'PASS' if prune_s <= 2 * clone_s else 'FAIL'}")
    print(f"  full-sort threshold (best of 3)        {sort_s * 1e3:9.2f} ms → sort / prune = "
          f"{sort_s / prune_s:5.1f}× (target ≥ 3×) {'PASS' if sort_s >= 3 * prune_s else 'FAIL'}")
    print(f"  zeros == k in every matrix: {exact}")


def calibrated(device: torch.device, samples: list[int], seq_len: int, repeat: int) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    from publisher.prune import PruneRequest, get_method
    from publisher.prune.scope import prunable_linears

    torch.manual_seed(0)
    template = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2), dtype=torch.float32).eval()
    print(f"[calibrated] SmolLM2-135M architecture, random fp32 weights, on {device}; seq_len {seq_len}")
    print(f"  {'method':<10}{'samples':>8}{'capture s':>10}{'forward s':>10}{'prune s':>9}{'total s':>9}"
          f"{'peak GiB':>9}{'sparsity':>10}")
    best: dict[tuple[str, int], dict] = {}
    for _ in range(repeat):
        for method in ("wanda", "sparsegpt"):
            for n in samples:
                model = copy.deepcopy(template).to(device)
                ids = torch.randint(0, SMOLLM2["vocab_size"], (n, seq_len), generator=torch.Generator().manual_seed(n))
                layers = prunable_linears(model)
                sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                start = time.perf_counter()
                with torch.no_grad():
                    details = get_method(method).prune(model, layers, PruneRequest(method, 0.5, calibration=ids),
                                                       lambda layer: None) or {}
                sync(device)
                total = time.perf_counter() - start
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
                zeros = sum(int((x.module.weight == 0).sum()) for x in layers)
                sparsity = zeros / sum(x.module.weight.numel() for x in layers)
                row = {**details, "total_s": total, "peak_gib": peak, "sparsity": sparsity}
                print(f"  {method:<10}{n:>8}{row.get('capture_s', 0):>10.2f}{row.get('forward_s', 0):>10.2f}"
                      f"{row.get('prune_s', 0):>9.2f}{total:>9.2f}{peak:>9.2f}{sparsity:>10.4%}", flush=True)
                if (method, n) not in best or total < best[(method, n)]["total_s"]:
                    best[(method, n)] = row
                del model, layers
    for method in ("wanda", "sparsegpt"):
        base, more = best[(method, samples[0])], best[(method, samples[-1])]
        print(f"  {method}: {samples[-1] / samples[0]:g}× tokens → forward "
              f"{more['forward_s'] / base['forward_s']:.2f}×, total {more['total_s'] / base['total_s']:.2f}×, "
              f"peak memory {more['peak_gib'] / base['peak_gib']:.2f}×")


def device_map(device: torch.device, layers: int, gpu_budget: str) -> None:
    from bench_magnitude import build_checkpoint
    from click.testing import CliRunner
    from safetensors.torch import load_file
    from tiny_models import tiny_tokenizer

    from publisher.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        n_params = build_checkpoint(base, layers)
        tiny_tokenizer().save_pretrained(base)
        calib = Path(tmp) / "calib.jsonl"
        with open(calib, "w") as f:
            for i in range(64):
                f.write(json.dumps({"text": " ".join(f"w{(i * 7 + j * 3) % 126}" for j in range(300))}) + "\n")
        torch.ones(1, device=device).sum().item()  # CUDA's start-up, paid before either timed run
        runs = {}
        for label, placement in (("one device", ["--device", str(device)]),
                                 ("device map", ["--device-map", "auto", "--max-memory", f"0={gpu_budget},cpu=64GiB"])):
            out = Path(tmp) / label.replace(" ", "-")
            start = time.perf_counter()
            result = CliRunner().invoke(main, [
                "--model", str(base), "--sparsity", "0.5", "--method", "wanda", "--dry-run", "--json", "-q",
                "--skip-eval", "ppl,srs,latency", "--base-model-id", "bench/synthetic", "--output-dir", str(out),
                "--calibration-dataset", str(calib), "--calibration-samples", "32", "--calibration-seq-len", "256",
                *placement])
            wall = time.perf_counter() - start
            if result.exit_code:
                print(f"[device-map] {label} failed: {result.output[-2000:]}")
                return
            record = json.loads((out / ".publish-pruned" / "prune.json").read_text()) \
                if (out / ".publish-pruned" / "prune.json").exists() else {}
            runs[label] = (wall, json.loads(result.stdout), record, load_file(out / "model.safetensors")
                           if (out / "model.safetensors").exists() else {})
        (one_s, one, _, one_w), (map_s, mapped, record, map_w) = runs["one device"], runs["device map"]
        print(f"[device-map] synthetic Llama, {n_params / 1e6:.0f} M params bf16, Wanda 32 × 256 tokens")
        print(f"  one device ({device}): {one_s:.1f} s; device map auto, max memory 0={gpu_budget}: {map_s:.1f} s "
              f"→ {map_s / one_s:.2f}×")
        print(f"  placement recorded: {record.get('environment', {}).get('placement', '?')}")
        agreement = [((one_w[n] == 0) == (map_w[n] == 0)).float().mean().item() for n in one_w if n in map_w]
        if agreement:
            print(f"  mask agreement over {len(agreement)} tensors: min {min(agreement):.4%}, "
                  f"mean {sum(agreement) / len(agreement):.4%}")
        print(f"  sparsity: one device {one.get('actual_sparsity')}, device map {mapped.get('actual_sparsity')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", help="cuda, cuda:1, mps, cpu [default: cuda or mps, whichever is present]")
    parser.add_argument("--sections", nargs="+", default=["magnitude", "calibrated", "device-map"])
    parser.add_argument("--layers", type=int, default=8, help="blocks of the synthetic Llama (8 → 542 M params)")
    parser.add_argument("--samples", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--gpu-budget", default="600MiB", help="GPU 0's share of the device map")
    args = parser.parse_args()
    if args.device is None:
        if not (torch.cuda.is_available() or torch.backends.mps.is_available()):
            print("skipped: no CUDA or MPS device here (this project's CI has none); --device cpu runs it anyway")
            return
        args.device = "cuda" if torch.cuda.is_available() else "mps"
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    print(f"device {name}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}")
    for section in args.sections:
        if section == "magnitude":
            magnitude(device, args.layers)
        elif section == "calibrated":
            calibrated(device, args.samples, args.seq_len, args.repeat)
        elif section == "device-map":
            device_map(device, args.layers, args.gpu_budget)
        else:
            sys.exit(f"unknown section: {section}")


if __name__ == "__main__":
    main()
