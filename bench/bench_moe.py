"""Streamed magnitude pruning of a Qwen3-30B-A3B-shaped mixture-of-experts checkpoint: time and peak memory,
as ratios.

    .venv/bin/python bench/bench_moe.py                  # scaled down: 4 layers × 16 experts, 32k vocab (~1 GB)
    .venv/bin/python bench/bench_moe.py --full           # the real shape: 48 layers × 128 experts, 151936 vocab
                                                         # (57 GiB of bf16 files; needs ~120 GB of disk)

The checkpoint has Qwen3-30B-A3B's widths (hidden 2048, 32 heads × 128, 4 KV heads, moe_intermediate 768,
top-8, bf16) and random weights, written tensor by tensor as the Hub ships it (one tensor per expert and
projection), so building it needs no more memory than one tensor. Everything is measured in this run:
- the streamed prune stage (`stream_prune`, magnitude 50 %: read each tensor, prune each expert matrix on its
  own, write) vs a file-to-file copy of the same checkpoint with the same reader and writer, interleaved,
  `--repeats` times each in fresh processes (best and median: page-cache writes make both noisy);
- each process's peak RSS (VmHWM) above that of a process that only imports the libraries, vs the largest
  tensor of the checkpoint: streaming holds about two tensors (one written while the next is read and pruned).
Targets: prune within 2× of the copy; peak above the libraries ≤ ~2-3× the largest tensor (not the model).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MEASURE = """
import json, sys, time
from pathlib import Path

def peak_rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

import torch, transformers, publisher.prune.streaming, publisher.safetensors_io  # the libraries
from transformers.models.qwen3_moe import modeling_qwen3_moe  # and the model code the prune builds a skeleton of
{body}
print(json.dumps({{"peak_rss": peak_rss(), "out": out}}))
"""
IMPORTS_ONLY = "out = None"
COPY = """from publisher.prune.sparsity import weight_locations
from publisher.safetensors_io import SafetensorsFile, plan_shards, write_shards
base, dest = Path({base!r}), Path({out!r})
start = time.perf_counter()
files = {{name: SafetensorsFile(base / name) for name in sorted(set(weight_locations(base).values()))}}
stored = {{n: f for f in files.values() for n in f.tensors}}
entries = [f.tensors[n] for n, f in stored.items()]
write_shards(dest, plan_shards(entries, "5GB"), lambda e: stored[e.name].read(e.name))
for f in files.values():
    f.close()
out = time.perf_counter() - start"""
PRUNE = """from publisher.prune import PruneRequest
from publisher.prune.streaming import stream_prune
start = time.perf_counter()
stream_prune(Path({base!r}), Path({out!r}), PruneRequest("magnitude", 0.5), dtype="auto", shard_size="5GB",
             progress=False)
out = time.perf_counter() - start"""

QWEN3_30B_A3B = dict(hidden_size=2048, num_attention_heads=32, num_key_value_heads=4, head_dim=128,
                     moe_intermediate_size=768, intermediate_size=6144, num_experts_per_tok=8, norm_topk_prob=True,
                     max_position_embeddings=40960, rope_theta=1e6, rms_norm_eps=1e-6, tie_word_embeddings=False)


def build_checkpoint(folder: Path, layers: int, experts: int, vocab: int) -> tuple[int, int]:
    """Write a random bf16 Qwen3-MoE checkpoint tensor by tensor; (bytes of weights, bytes of the largest tensor)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    from publisher.prune.moe_layout import saved_layout
    from publisher.safetensors_io import TensorEntry, plan_shards, write_shards

    config = AutoConfig.for_model("qwen3_moe", **QWEN3_30B_A3B, num_hidden_layers=layers, num_experts=experts,
                                  vocab_size=vocab, dtype="bfloat16")
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    layout = saved_layout(skeleton)
    entries = [TensorEntry(name, torch.bfloat16, piece.shape) for name, piece in layout.items()]
    generator = torch.Generator().manual_seed(0)

    def produce(entry: TensorEntry) -> torch.Tensor:
        if len(entry.shape) == 1:  # norms
            return torch.ones(entry.shape, dtype=torch.bfloat16)
        return (torch.randn(entry.shape, generator=generator) * 0.02).to(torch.bfloat16)

    write_shards(folder, plan_shards(entries, "5GB"), produce)
    config.save_pretrained(folder)
    GenerationConfig().save_pretrained(folder)
    words = {f"w{i}": i for i in range(254)} | {"<unk>": 254, "<eos>": 255}
    tokenizer = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<eos>").save_pretrained(folder)
    return sum(e.nbytes for e in entries), max(e.nbytes for e in entries)


def measure(body: str) -> dict:
    done = subprocess.run([sys.executable, "-c", MEASURE.format(body=body)], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"measured process failed:\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="the real Qwen3-30B-A3B shape (48 × 128, vocab 151936)")
    parser.add_argument("--layers", type=int, default=4, help="decoder blocks (default 4; --full: 48)")
    parser.add_argument("--experts", type=int, default=16, help="routed experts per layer (default 16; --full: 128)")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary (default 32000; --full: 151936)")
    parser.add_argument("--repeats", type=int, default=2, help="copy and prune runs each, interleaved (default 2)")
    parser.add_argument("--scratch", type=Path, help="where to write the checkpoints (default: a temp folder)")
    args = parser.parse_args()
    if args.full:
        args.layers, args.experts, args.vocab = 48, 128, 151936
    gib = 1024**3
    with tempfile.TemporaryDirectory(dir=args.scratch) as tmp:
        root = Path(tmp)
        ckpt, largest = build_checkpoint(root / "base", args.layers, args.experts, args.vocab)
        print(f"Qwen3-30B-A3B-shaped checkpoint: {args.layers} layers × {args.experts} experts (top-8), vocab "
              f"{args.vocab}: {ckpt / gib:.2f} GiB of bf16; largest tensor {largest / 2**20:.0f} MiB")
        floor = measure(IMPORTS_ONLY)["peak_rss"]
        copies, prunes = [], []
        for i in range(args.repeats):
            for body, runs in ((COPY, copies), (PRUNE, prunes)):
                out = root / f"out{i}"
                runs.append(measure(body.format(base=str(root / "base"), out=str(out))))
                shutil.rmtree(out)
        copy_t, prune_t = [r["out"] for r in copies], [r["out"] for r in prunes]
        peak = max(r["peak_rss"] for r in prunes)
        copy_peak = max(r["peak_rss"] for r in copies)
        print(f"copy (same reader/writer)   {', '.join(f'{t:.2f}' for t in copy_t)} s")
        print(f"streamed magnitude prune    {', '.join(f'{t:.2f}' for t in prune_t)} s")
        print(f"prune / copy time           best {min(prune_t) / min(copy_t):.2f}×, median "
              f"{statistics.median(prune_t) / statistics.median(copy_t):.2f}×   (target ≤ 2×)")
        print(f"peak RSS above the libraries: prune {(peak - floor) / 2**20:.0f} MiB = "
              f"{(peak - floor) / largest:.2f}× the largest tensor, {(peak - floor) / ckpt:.3f}× the checkpoint; "
              f"copy {(copy_peak - floor) / largest:.2f}× the largest tensor (libraries alone {floor / gib:.2f} GiB)")


if __name__ == "__main__":
    main()
