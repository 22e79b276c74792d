"""The measure stage through the CLI: perplexity, SRS and latency of pruned vs dense, cached baseline, card."""


import pytest
from click.testing import CliRunner
from fixtures.measure_models import FIXTURES, tiny_chat_model, write_word_text

from publisher.cli import main
from publisher.results import read_results


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure")
    model, tokenizer = tiny_chat_model()
    model.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    write_word_text(root / "text.jsonl")
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
    for row in ("| perplexity |", "| SRS (ambiguous, mean of categories) |", "| latency per item (MLX, CPU) |",
                "### Stereotype reliance by category", "**Quick run:**", "plots/srs_by_category.png"):
        assert row in card, row
    assert CliRunner().invoke(main, ["card", "lint", str(out / "README.md")]).exit_code == 0


def test_the_card_shows_parse_quality_item_intervals_the_studys_emergence_and_what_it_departs_from(setup):
    out = setup / "run50"
    if not (out / "README.md").is_file():
        assert run(setup, out).exit_code == 0
    metrics = read_results(out / "results.json").metrics
    card = (out / "README.md").read_text()
    comparison = metrics["srs"]["comparison"]["ambig"]
    pruned = metrics["srs"]["pruned"]["overall"]["ambig"]
    # the definitions travel with the card
    assert "[measurement.md](measurement.md)" in card and (out / "measurement.md").is_file()
    assert "## Stereotype reliance on BBQ (SRS)" in (out / "measurement.md").read_text()
    # intervals resample items, and the card says so
    assert pruned["srs"]["interval"] == "item bootstrap" and "resamples whole items" in card
    # parse quality: every rule's share, a strict SRS, and the last-resort flag when it decides > 10 %
    assert "### How the replies were parsed" in card and "| last resort: the first a, b or c anywhere |" in card
    assert "| SRS, strict parses only (ambiguous) |" in card
    assert "| replies decided by the last-resort rule (ambiguous) |" in card
    assert sum(pruned["rules"].values()) == pruned["replies"]
    assert ("**Parse quality.**" in card) == (pruned["last_resort_share"] > 0.10)
    # the study's emergence, with its numerator and denominator
    emergence = comparison["emergence"]
    assert f"| new-bias emergence (the study's definition) | {emergence['k']} of {emergence['n']} items" in card
    # every BBQ row gives one target or is listed per category with its reason (two synthetic Race rows cannot)
    assert "Race_ethnicity: 2 of its rows excluded" in card and "both answers match" in card
    # the overall SRS covers three of the study's five categories: the card names the missing ones
    assert "the study's five are missing Age, Religion" in card
    # no latency interval from 2 items, and the timed work said as it is
    assert "(no interval: 2 items)" in card and "exactly 5 new tokens (EOS ignored)" in card
    # the study's headline is never this card's own finding
    assert "raised perplexity by 3.5 %" not in card or "Mistral-7B-Instruct-v0.3" in card
    assert "## Differences from the study's protocol" in card and "**not comparable**" in card
    assert "decoded in float32" in card or "Replies were decoded in" in card


def test_dense_baseline_is_cached_across_a_grid_and_skips_are_honest(setup):
    first = run(setup, setup / "run30", "0.3", "--skip-eval", "latency")
    assert first.exit_code == 0, first.output
    metrics = read_results(setup / "run30" / "results.json").metrics
    assert metrics["dense_baseline"]["reused"] is True  # computed by the 50 % run of the same base
    assert "latency" not in metrics and metrics["not_measured"] == {"latency": "skipped by --skip-eval"}
    card = (setup / "run30" / "README.md").read_text()
    assert "| latency per item (MLX" not in card and "- latency: skipped by --skip-eval" in card


def test_missing_bbq_categories_and_short_ppl_data_are_clear_errors(setup, tmp_path):
    result = run(setup, tmp_path / "a", "0.5", "--bbq-categories", "Age")
    assert result.exit_code == 2 and "Age" in result.stderr, result.output
    result = run(setup, tmp_path / "b", "0.5", "--ppl-samples", "1000")
    assert result.exit_code == 2 and "tokens" in result.stderr, result.output
