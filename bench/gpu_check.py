"""The flagship command on a gemma-2-9b-it-shaped model, at the protocol's sizes, on one GPU: one JSON line per stage.

    python3 bench/gpu_check.py                 # on a GPU machine: < 10 minutes on one H200 is the target
    python3 bench/gpu_check.py --tiny          # CPU, tiny config, a minute: what CI runs so the script cannot rot
    make gpu-check                             # the same, from the Makefile

What it does, with nothing from the network (the GPU machine reaches nothing; `../shared` does not travel):
1. builds the model from `bench/configs/gemma-2-9b-it.json` (the real config; the vocabulary cut to a word-level
   tokenizer of 49,152 words made here, with a Gemma-style chat template that refuses a system turn) with random
   bfloat16 weights, on the GPU, and saves it;
2. writes the data the run reads, generated to the protocol's sizes: 128 calibration documents of > 2,048 tokens,
   Tulu-shaped conversations for 256 x 512 perplexity tokens, and 12,148 BBQ-shaped ambiguous items in the five
   study categories' original format (the measurement is of time, not quality);
3. runs the real CLI: `publish-pruned run --model <folder> --sparsity 0.5 --method wanda --hub local` (128 x 2048
   calibration, perplexity and SRS for pruned and dense, latency), and reads the stages' seconds, peak GPU memory
   and batch sizes back from its results.json;
4. decodes 40 BBQ items at batch 1 and at the automatic size and counts the replies that differ (float32 decoding
   should make them equal on a GPU too), then prunes a fresh copy with SparseGPT alone (library call, same
   calibration data);
5. with more than one GPU, prunes with `--device-map auto` too (else says it skipped).

Output: one JSON line per stage on stdout (`stage`, `seconds`, `peak_gpu_gib`, batch sizes, ...), the last one the
total. `--tiny` shrinks the model (2 layers, hidden 64) and every size, and runs wherever torch runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the GPU machine runs the checkout as it is, without installing it
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

CONFIG = Path(__file__).parent / "configs" / "gemma-2-9b-it.json"
VOCAB = 49_152
SPECIAL = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
# Gemma-2's template shape: no system turn (the tool merges it into the first user turn), model turns as "model".
TEMPLATE = ("{{ bos_token }}{% for m in messages %}{% if m['role'] == 'system' %}"
            "{{ raise_exception('System role not supported') }}{% endif %}"
            "<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }} {{ m['content'] }} <end_of_turn> "
            "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model {% endif %}")
STUDY_ITEMS = {"Age": 1840, "Gender_identity": 2836, "Race_ethnicity": 3440, "Religion": 600, "SES": 3432}
GROUPS = {"Age": ("old", "nonOld"), "Gender_identity": ("F", "M"), "Race_ethnicity": ("Black", "White"),
          "Religion": ("Muslim", "Christian"), "SES": ("lowSES", "highSES")}
FULL = {"calibration": (128, 2048), "ppl": (256, 512), "items": None, "latency_items": 4, "layers": None}
TINY = {"calibration": (4, 64), "ppl": (4, 64), "items": 3, "latency_items": 2, "layers": 2}


def emit(stage: str, **fields) -> None:
    print(json.dumps({"stage": stage, **fields}), flush=True)


def gib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**30, 2)


def words(rng: random.Random, n: int, vocab: int) -> str:
    return " ".join(f"w{rng.randrange(vocab - len(SPECIAL) - 8)}" for _ in range(n))


def build_tokenizer(folder: Path, vocab: int):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    names = [*SPECIAL, "A", "B", "C", "A)", "B)", "C)", "Answer:", "Context:"]
    table = {name: i for i, name in enumerate(names)}
    table.update({f"w{i}": len(names) + i for i in range(vocab - len(names))})
    core = Tokenizer(models.WordLevel(table, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                        bos_token="<bos>", unk_token="<unk>")
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_model(folder: Path, sizes: dict, device: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = {k: v for k, v in json.loads(CONFIG.read_text()).items() if k not in ("architectures", "torch_dtype")}
    fields.update(vocab_size=VOCAB, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    if sizes["layers"]:
        fields.update(vocab_size=2048, num_hidden_layers=sizes["layers"], hidden_size=64, intermediate_size=128,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16)
    config = AutoConfig.for_model(**fields)
    build_tokenizer(folder, config.vocab_size)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    params = sum(p.numel() for p in model.parameters())
    del model
    return params


def write_data(folder: Path, sizes: dict, vocab: int) -> dict[str, Path]:
    """Calibration documents, perplexity conversations and BBQ files, generated to the protocol's sizes."""
    rng = random.Random(0)
    folder.mkdir(parents=True, exist_ok=True)
    samples, seq = sizes["calibration"]
    c4 = folder / "c4.jsonl.gz"
    with gzip.open(c4, "wt") as f:
        for _ in range(samples + 8):
            f.write(json.dumps({"text": words(rng, seq + 64, vocab)}) + "\n")
    rows, row_len = sizes["ppl"]
    tulu = folder / "tulu.jsonl"
    with open(tulu, "w") as f:
        for _ in range(rows * row_len // 400 + 8):
            f.write(json.dumps({"messages": [{"role": "user", "content": words(rng, 200, vocab)},
                                             {"role": "assistant", "content": words(rng, 200, vocab)}]}) + "\n")
    bbq = folder / "bbq"
    bbq.mkdir(exist_ok=True)
    for category, count in STUDY_ITEMS.items():
        stereotyped, other = GROUPS[category]
        with open(bbq / f"{category}.jsonl", "w") as f:
            for i in range(sizes["items"] or count):
                f.write(json.dumps({
                    "example_id": i, "question_index": str(i % 25), "question_polarity": "neg",
                    "context_condition": "ambig", "category": category,
                    "answer_info": {"ans0": [words(rng, 2, vocab), stereotyped], "ans1": [words(rng, 2, vocab), other],
                                    "ans2": ["w0", "unknown"]},
                    "additional_metadata": {"stereotyped_groups": [stereotyped]},
                    "context": words(rng, 40 + i % 30, vocab), "question": words(rng, 8, vocab),
                    "ans0": words(rng, 2, vocab), "ans1": words(rng, 2, vocab), "ans2": "w0", "label": 2}) + "\n")
    return {"c4": c4, "tulu": tulu, "bbq": bbq}


def run_cli(args: list[str], env: dict) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "from publisher.console import run; run()", *args],
                          capture_output=True, text=True, env=env, check=False)
    return time.perf_counter() - start, done


def report_run(run: Path, seconds: float) -> None:
    results = json.loads((run / "results.json").read_text())
    pruning, metrics = results["pruning"], results.get("metrics") or {}
    emit("prune", method=pruning["method"], seconds=round(pruning["prune_time_s"], 2),
         peak_gpu_gib=gib(pruning.get("peak_gpu_bytes")), calibration=f"{pruning['calibration']['samples']} x "
         f"{pruning['calibration']['seq_len']}", device=results["settings"]["device"])
    for model in ("pruned", "dense"):
        if ppl := (metrics.get("perplexity") or {}).get(model):
            emit(f"perplexity {model}", seconds=round(ppl["wall_s"], 2), peak_gpu_gib=gib(ppl.get("peak_gpu_bytes")),
                 tokens=ppl["tokens"], tokens_per_s=round(ppl["tokens_per_s"]), batch=ppl.get("batching"))
        if srs := (metrics.get("srs") or {}).get(model):
            replies = len(srs["seeds"]) * srs["items"]
            emit(f"srs {model}", seconds=round(srs["wall_s"], 2), peak_gpu_gib=gib(srs.get("peak_gpu_bytes")),
                 replies=replies, replies_per_s=round(srs["replies_per_s"], 1), batch=srs.get("batching"),
                 decoding=srs.get("decoding"))
    latency = metrics.get("latency") or {}
    emit("latency", seconds=round(latency.get("stage_s", 0.0), 2), measured=latency.get("measured"),
         backend=(latency.get("machine") or {}).get("backend"), device=(latency.get("machine") or {}).get("device"),
         reason=latency.get("reason"), ratio=(latency.get("ratio") or {}).get("value"))
    emit("whole command", seconds=round(seconds, 1), published=True)


def batch_invariance(folder: Path, data: dict, device: str) -> None:
    """The same SRS replies at batch 1 and at the automatic size, decoded in float32 on this device: what lets
    the baseline cache and the out-of-memory back-off ignore the batch size."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from publisher.measure.bbq import bbq_source, load_bbq
    from publisher.measure.srs import evaluate_srs

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    items = load_bbq(bbq_source(data["bbq"]), None, limit_per_category=8).items
    start = time.perf_counter()
    one = evaluate_srs(model, tokenizer, items, batch_size=1)
    auto = evaluate_srs(model, tokenizer, items)
    differ = sum(a.reply != b.reply for a, b in zip(one.replies, auto.replies, strict=True))
    emit("batch invariance", seconds=round(time.perf_counter() - start, 1), replies=len(one.replies),
         differ=differ, auto_batch=auto.batching.get("final"), decoding=auto.decoding.get("dtype"))
    del model


def sparsegpt_alone(folder: Path, data: dict, sizes: dict, device: str) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from publisher.prune import PruneRequest, prune_model
    from publisher.prune.calibration import CalibrationSpec, load_calibration

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).to(device).eval()
    samples, seq = sizes["calibration"]
    calibration = load_calibration(AutoTokenizer.from_pretrained(folder), CalibrationSpec(str(data["c4"]),
                                                                                          samples=samples, seq_len=seq))
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    prune_model(model, PruneRequest(method="sparsegpt", sparsity=0.5, calibration=calibration.input_ids),
                progress=False)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    emit("prune", method="sparsegpt", seconds=round(seconds, 2), peak_gpu_gib=gib(peak),
         calibration=f"{samples} x {seq}", device=device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes, any device (CI)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu-check")))
    parser.add_argument("--skip-sparsegpt", action="store_true")
    args = parser.parse_args()
    sizes = TINY if args.tiny else FULL
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not args.tiny and device == "cpu":
        sys.exit("gpu_check: no CUDA GPU here; run with --tiny for the CPU check")
    total = time.perf_counter()
    shutil.rmtree(args.out / "work", ignore_errors=True)
    work = args.out / "work"
    emit("machine", device=device, gpu=torch.cuda.get_device_name() if device == "cuda" else None,
         gpus=torch.cuda.device_count(), torch=torch.__version__, tiny=args.tiny)

    start = time.perf_counter()
    params = build_model(work / "model", sizes, device)
    data = write_data(work / "data", sizes, VOCAB if not args.tiny else 2048)
    emit("build model and data", seconds=round(time.perf_counter() - start, 1), params=params)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0"}
    samples, seq = sizes["calibration"]
    rows, row_len = sizes["ppl"]
    cli = ["run", "--model", str(work / "model"), "--sparsity", "0.5", "--method", "wanda", "--hub", "local",
           "--hub-dir", str(work / "hub"), "--output-dir", str(work / "run"), "--cache-dir", str(work / "cache"),
           "--base-model-id", "google/gemma-2-9b-it", "--calibration-dataset", str(data["c4"]),
           "--calibration-samples", str(samples), "--calibration-seq-len", str(seq),
           "--ppl-data", str(data["tulu"]), "--ppl-samples", str(rows), "--ppl-seq-len", str(row_len),
           "--bbq-path", str(data["bbq"]), "--latency-items", str(sizes["latency_items"]), "--skip-eval", "",
           "--json", "-q"]
    if sizes["items"]:
        cli += ["--bbq-limit", str(sizes["items"])]
    seconds, done = run_cli(cli, env)
    if done.returncode != 0:
        emit("whole command", seconds=round(seconds, 1), failed=done.returncode, stderr=done.stderr[-2000:])
        sys.exit(1)
    report_run(work / "run", seconds)

    batch_invariance(work / "model", data, device)
    if not args.skip_sparsegpt:
        sparsegpt_alone(work / "model", data, sizes, device)
    if torch.cuda.device_count() > 1:
        mapped = [*cli, "--output-dir", str(work / "run-map"), "--device-map", "auto", "--skip-eval",
                  "ppl,srs,latency", "--dry-run"]  # later options win: its own folder, no measuring, no push
        seconds, done = run_cli(mapped, env)
        emit("device map auto", seconds=round(seconds, 1), returncode=done.returncode,
             stderr=done.stderr[-1000:] if done.returncode else None)
        if done.returncode:
            sys.exit(1)
    else:
        emit("device map auto", skipped=f"{torch.cuda.device_count()} GPU(s): accelerate's placement across GPUs "
                                        "needs more than one")
    emit("total", seconds=round(time.perf_counter() - total, 1))


if __name__ == "__main__":
    main()
