"""The measure stage through the CLI: perplexity, SRS and latency of pruned vs dense, cached baseline, card."""

import json
import random

import pytest
from click.testing import CliRunner
from fixtures.measure_models import FIXTURES, tiny_chat_model

from publisher.cli import main
from publisher.results import read_results


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure")
    model, tokenizer = tiny_chat_model()
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    rng = random.Random(0)
    with open(root / "text.jsonl", "w") as f:
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(126)}" for _ in range(60))}) + "\n")
    return root


def run(setup, out, sparsity="0.5", *extra):
    args = ["--model", str(setup / "base"), "--sparsity", sparsity, "--dry-run", "--json", "-q",
            "--output-dir", str(out), "--base-model-id", "test-org/tiny-chat", "--cache-dir", str(setup / "cache"),
            "--skip-eval", "", "--ppl-data", str(setup / "text.jsonl"), "--ppl-samples", "4", "--ppl-seq-len", "64",
            "--bbq-path", str(FIXTURES / "bbq"), "--bbq-categories", "all", "--bbq-limit", "3",
            "--latency-items", "2", "--latency-warmup", "0", *extra]
    return CliRunner().invoke(main, args)


def test_measure_stage_fills_results_card_and_eval_records(setup):
    out = setup / "run50"
    result = run(setup, out)
    assert result.exit_code == 0, result.output
    metrics = read_results(out / "results.json").metrics
    ppl = metrics["perplexity"]
    assert ppl["dense"]["token_hash"] == ppl["pruned"]["token_hash"]
    assert ppl["pruned"]["rows"] == 4 and ppl["pruned"]["seq_len"] == 64 and ppl["dense"]["ppl"] > 1
    assert set(metrics["srs"]["comparison"]) == {"ambig"}
    assert metrics["limits"]["bbq_limit_per_category"] == 3
    assert metrics["latency"]["measured"] is True, metrics["latency"].get("reason")
    assert metrics["dense_baseline"]["reused"] is False
    replies = (out / "eval" / "srs_replies_pruned.jsonl").read_text().splitlines()
    assert len(replies) == 5 * sum(g["items"] for g in metrics["srs"]["pruned"]["per_category"])

    card = (out / "README.md").read_text()
    for row in ("| perplexity |", "| SRS (ambiguous, mean of categories) |", "| latency per item (MLX) |",
                "### Stereotype reliance by category", "**Quick run:**", "plots/srs_by_category.png"):
        assert row in card, row
    assert CliRunner().invoke(main, ["card", "lint", str(out / "README.md")]).exit_code == 0


def test_dense_baseline_is_cached_across_a_grid_and_skips_are_honest(setup):
    first = run(setup, setup / "run30", "0.3", "--skip-eval", "latency")
    assert first.exit_code == 0, first.output
    metrics = read_results(setup / "run30" / "results.json").metrics
    assert metrics["dense_baseline"]["reused"] is True  # computed by the 50 % run of the same base
    assert "latency" not in metrics and metrics["not_measured"] == {"latency": "skipped by --skip-eval"}
    card = (setup / "run30" / "README.md").read_text()
    assert "| latency per item (MLX) |" not in card and "- latency: skipped by --skip-eval" in card


def test_missing_bbq_categories_and_short_ppl_data_are_clear_errors(setup, tmp_path):
    result = run(setup, tmp_path / "a", "0.5", "--bbq-categories", "Age")
    assert result.exit_code == 2 and "Age" in result.stderr, result.output
    result = run(setup, tmp_path / "b", "0.5", "--ppl-samples", "1000")
    assert result.exit_code == 2 and "tokens" in result.stderr, result.output
