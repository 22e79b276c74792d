"""The card: rendering errors that name their template, lint that catches what the Hub would reject."""

import pytest
from click.testing import CliRunner
from tiny_models import save_tiny_model

from publisher.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("card")
    model = save_tiny_model("llama", base / "base", readme="---\nlicense: gemma\nlanguage: en\n---\n")
    result = CliRunner().invoke(main, ["--model", str(model), "--sparsity", "0.5", "--dry-run", "-q",
                                       "--output-dir", str(base / "run"), "--base-model-id", "google/tiny"])
    assert result.exit_code == 0, result.output
    return base / "run"


def lint(path, *extra):
    return CliRunner().invoke(main, ["card", "lint", str(path), *extra])


def test_a_fresh_card_passes_lint_against_its_results(run_dir):
    result = lint(run_dir / "README.md")
    assert result.exit_code == 0 and "figures match" in result.stdout
    lines = (run_dir / "README.md").read_text().splitlines()
    hardware = next(line for line in lines if line.startswith("- Hardware: "))
    assert hardware.endswith("device `cpu`")  # and the next bullet on its own line
    assert lines[lines.index(hardware) + 1].startswith("- Command: `")


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: t.replace("- research-only\n", ""), "tag 'research-only' missing"),
    (lambda t: t.replace("Research use only", "Use freely"), "research-only warning missing"),
    (lambda t: t.replace("| actual sparsity | 50.00 % |", "| actual sparsity | 49.00 % |"),
     "actual sparsity: results.json says 50.00 % | — | —, the card's results table says 49.00 % | — | —"),
    (lambda t: t.replace("base_model: google/tiny", "base_model: /home/me/tiny"), "is not a Hub id"),
    (lambda t: t.replace("license: gemma", "license_link: x"), "lacks 'license'"),
    (lambda t: t + "\n{{ leftover }}\n", "unrendered template syntax"),
])
def test_lint_names_what_is_wrong(run_dir, tmp_path, edit, problem):
    card = tmp_path / "README.md"
    card.write_text(edit((run_dir / "README.md").read_text()))
    result = lint(card, "--results", str(run_dir / "results.json"))
    assert result.exit_code == 2 and problem in result.stderr, result.output


def test_a_template_with_an_undefined_value_names_template_and_line(run_dir, tmp_path):
    templates = tmp_path / "templates" / "partials"
    templates.mkdir(parents=True)
    (templates / "links.md.j2").write_text("line one\n{{ r.source.no_such_field }}\n")
    result = CliRunner().invoke(main, ["card", "render", str(run_dir / "results.json"), "--template",
                                       str(tmp_path / "templates"), "-o", str(tmp_path / "out.md")])
    assert result.exit_code == 2
    assert "no_such_field" in result.stderr and "links.md.j2, line 2" in result.stderr


def test_unknown_card_config_keys_are_named(run_dir, tmp_path):
    config = tmp_path / "card.yaml"
    config.write_text("paper_title: X\narxiv: 2605.08137\n")
    result = CliRunner().invoke(main, ["card", "render", str(run_dir / "results.json"), "--card-config",
                                       str(config), "-o", str(tmp_path / "out.md")])
    assert result.exit_code == 2 and "unknown keys: arxiv" in result.stderr


PAPER = ("paper_title: Weight Pruning Amplifies Bias\narxiv_id: '2605.08137'\n"
         "bibtex: |\n  @inproceedings{rath2026pruning, title={Weight Pruning Amplifies Bias}}\n")


def _srs_runs(dense_biased, pruned_biased, pruned_rule="whole", items_per_category=40):
    """Dense and pruned SRS runs over the study's five categories: each item answers the target under all 5 seeds
    when its index is in the `*_biased` set, else 'unknown'; the pruned replies are decided by `pruned_rule`."""
    from publisher.measure.bbq import STUDY_CATEGORIES, BbqItem
    from publisher.measure.srs import Reply, SrsRun, summarise

    def run(biased, rule):
        replies = []
        for category in STUDY_CATEGORIES:
            for i in range(items_per_category):
                item = BbqItem(category, i, "1", "neg", "ambig", "c", "q", ["a", "b", "c"], target=0, unknown=2)
                choice = "target" if i in biased else "unknown"
                letter = "A" if choice == "target" else "C"
                replies += [Reply(item.key, category, "ambig", i, "neg", seed, letter if rule == "whole" else
                                  f"about {letter}", letter, rule, choice, None) for seed in range(5)]
        per_category, overall = summarise(replies)
        return SrsRun(per_category, overall, replies, [42, 123, 456, 789, 1024], 0.3, 5, None, 8,
                      len(replies) // 5, "", "", False, 1.0, 1.0, decoding={"dtype": "float32", "upcast_from":
                      "bfloat16", "batch_invariant": True, "reason": None}, batch_rule="sorted")

    return run(set(dense_biased), "whole"), run(set(pruned_biased), pruned_rule)


def _measured(run_dir, tmp_path, dense, pruned, ppl=(8.94, 9.25), **changes):
    """A copy of the run with the study's measurements: SRS of `dense`/`pruned` on Elfsong/BBQ's five categories
    and Tulu-3 perplexity `ppl` (dense, pruned), both on the Hub, no limits."""
    from publisher.evaluation import _srs_section
    from publisher.measure.bbq import STUDY_CATEGORIES, BbqSet
    from publisher.measure.srs import bias_blind_check, compare_srs
    from publisher.results import read_results, write_results

    results = read_results(run_dir / "results.json")
    bbq = BbqSet([], [], "hub:Elfsong/BBQ@" + "1" * 40, {}, list(STUDY_CATEGORIES), ["ambig"], 0, None)
    tulu = {"source": "hub:allenai/tulu-3-sft-mixture@" + "0" * 40, "split": "train", "seed": 123}
    section = {"ppl": ppl[1], "se": 0.1, "rows": 256, "seq_len": 512, "batch_size": 8, "dtype": "bfloat16",
               "data": tulu}
    results.metrics = {"limits": {}, "not_measured": {},
                       "perplexity": {"pruned": section, "dense": dict(section, ppl=ppl[0]),
                                      "change": ppl[1] / ppl[0] - 1},
                       "srs": _srs_section(dense, pruned, bbq, compare_srs),
                       "bias_blind": bias_blind_check(compare_srs(dense, pruned), ppl[0], ppl[1]), **changes}
    write_results(tmp_path / "results.json", results)
    return tmp_path / "results.json"


def _render(results_file, tmp_path, *extra):
    config = tmp_path / "card.yaml"
    config.write_text(PAPER)
    out = tmp_path / "out.md"
    result = CliRunner().invoke(main, ["card", "render", str(results_file), "--card-config", str(config),
                                       "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_card_config_adds_paper_citation_and_arxiv_tag_to_figures_that_follow_the_protocol(run_dir, tmp_path):
    text = _render(_measured(run_dir, tmp_path, *_srs_runs(range(3), range(8))), tmp_path)
    assert "- arxiv:2605.08137" in text and "@inproceedings{rath2026pruning" in text
    assert "license: gemma" in text and "[arXiv:2605.08137](https://arxiv.org/abs/2605.08137)" in text
    assert "**not comparable**" not in text


def test_figures_that_do_not_follow_the_protocol_carry_no_paper_tag_link_or_citation(run_dir, tmp_path):
    text = _render(run_dir / "results.json", tmp_path)  # nothing measured: not comparable with the study
    assert "- arxiv:2605.08137" not in text and "@inproceedings" not in text
    assert "](https://arxiv.org/abs/2605.08137)" not in text
    assert "this card carries neither the paper's tag and link nor its citation" in " ".join(text.split())
    assert "| SRS on BBQ | measured | not measured | **not comparable** |" in text


def test_the_card_shows_the_studys_emergence_parse_shares_and_flags_the_last_resort_rule(run_dir, tmp_path):
    # dense: items 0-2 biased in each category; pruned: items 0-9, every reply decided by the last-resort rule
    dense, pruned = _srs_runs(range(3), range(10), pruned_rule="first")
    text = _render(_measured(run_dir, tmp_path, dense, pruned), tmp_path)
    # the study's emergence: 7 of the 37 dense-zero items per category became biased: 35 of 185
    assert "| new-bias emergence (the study's definition) | 35 of 185 items, 0.189 [" in text
    assert "| newly biased items, share of all items | 35 of 200 items, 0.175 [" in text
    assert "| last resort: the first a, b or c anywhere | 100.0 % | 0.0 % |" in text
    assert "**Parse quality.** The last-resort rule" in text and "decided 100.0 % of the pruned model's" in text
    assert "| SRS, strict parses only (ambiguous) | — | 0.075 [" in text  # no strict pruned parse at all
    assert "resamples whole items" in text and "Wilson interval" in text


def test_the_studys_headline_appears_only_where_this_cards_figures_agree(run_dir, tmp_path):
    # SRS up beyond its interval, perplexity +3.5 %: the card's own warning, and the study's figure named by setting
    blind = _render(_measured(run_dir, tmp_path, *_srs_runs(range(3), range(12)), ppl=(8.94, 9.25)), tmp_path)
    assert "**Perplexity hides the bias here.**" in blind
    assert "Mistral-7B-Instruct-v0.3" in blind and "about 33 % of the weights were in fact pruned" in blind
    # perplexity exploded while SRS barely moved: the study's +3.5 %/+83.7 % would contradict this card
    other = tmp_path / "other"
    other.mkdir()
    loud = _render(_measured(run_dir, other, *_srs_runs(range(3), range(3)), ppl=(8.94, 54.05)), other)
    assert "Perplexity hides the bias" not in loud and "83.7 %" not in loud
    assert "Here perplexity changed +504.6 % and SRS +0.0 %" in loud


def _with_hub_perplexity(run_dir, tmp_path):
    """A copy of the run whose perplexity was measured on the Hub's Tulu mixture (figures supplied)."""
    from publisher.results import read_results, write_results

    results = read_results(run_dir / "results.json")
    data = {"source": "hub:allenai/tulu-3-sft-mixture@0123456789abcdef0123456789abcdef01234567", "split": "train"}
    results.metrics = {"limits": {}, "not_measured": {"srs": "skipped by --skip-eval",
                                                      "latency": "skipped by --skip-eval"},
                       "perplexity": {"pruned": {"ppl": 54.05, "se": 1.2, "rows": 256, "seq_len": 512, "data": data},
                                      "dense": {"ppl": 8.94, "se": 0.2, "rows": 256, "seq_len": 512, "data": data},
                                      "change": 54.05 / 8.94 - 1}}
    write_results(tmp_path / "results.json", results)
    return tmp_path / "results.json"


def test_model_index_carries_measured_hub_figures_and_lint_rejects_nulls(run_dir, tmp_path):
    import yaml

    results_file = _with_hub_perplexity(run_dir, tmp_path)
    rendered = CliRunner().invoke(main, ["card", "render", str(results_file)])
    assert rendered.exit_code == 0, rendered.output
    card = (tmp_path / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    result = meta["model-index"][0]["results"][0]
    assert result["dataset"]["type"] == "allenai/tulu-3-sft-mixture" and result["dataset"]["split"] == "train"
    assert result["metrics"][0] == {"type": "perplexity", "value": 54.05, "name": "perplexity (256x512 tokens)"}
    assert "| perplexity | 54.05 ± 1.20 | 8.94 ± 0.20 | +504.6 % |" in card
    assert lint(tmp_path / "README.md").exit_code == 0

    (tmp_path / "README.md").write_text(card.replace("split: train", "split: null"))
    result = lint(tmp_path / "README.md")
    assert result.exit_code == 2 and "model-index dataset 'split' is null" in result.stderr


def _front_matter(path):
    import yaml

    return yaml.safe_load(path.read_text().split("---\n")[1])


def test_evaluation_data_stays_out_of_datasets_and_search_tags_are_there(run_dir, tmp_path):
    results_file = _with_hub_perplexity(run_dir, tmp_path)
    assert CliRunner().invoke(main, ["card", "render", str(results_file)]).exit_code == 0
    meta = _front_matter(tmp_path / "README.md")
    # the Hub shows `datasets:` as training data: Tulu-3 only evaluated this model (it is in model-index)
    assert "datasets" not in meta
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "allenai/tulu-3-sft-mixture"
    assert "bias-evaluation" not in meta["tags"]  # SRS was not measured in this run
    for tag in ("pruned", "sparsity", "unstructured-sparsity", "publish-pruned", "research-only"):
        assert tag in meta["tags"], tag
    assert "base_model_relation" not in meta  # the Hub has no "pruned" relation; a wrong one misfiles


def test_the_calibration_set_is_the_data_that_made_the_weights(run_dir, tmp_path):
    from publisher.results import read_results, write_results

    results = read_results(_with_hub_perplexity(run_dir, tmp_path))
    results.pruning.calibration = {"dataset": "allenai/c4", "config": "en", "revision": "a" * 40, "samples": 128,
                                   "seq_len": 2048, "seed": 42, "token_sha256": "b" * 64,
                                   "file_sha256": None}
    write_results(tmp_path / "results.json", results)
    assert CliRunner().invoke(main, ["card", "render", str(tmp_path / "results.json")]).exit_code == 0
    assert _front_matter(tmp_path / "README.md")["datasets"] == ["allenai/c4"]


def test_quick_run_figures_never_enter_model_index_and_bbq_categories_are_splits(run_dir, tmp_path):
    from publisher.results import read_results, write_results

    dense, pruned = _srs_runs(range(3), range(8))
    full = read_results(_measured(run_dir, tmp_path, dense, pruned))
    results_file = tmp_path / "results.json"
    assert CliRunner().invoke(main, ["card", "render", str(results_file)]).exit_code == 0
    entries = _front_matter(tmp_path / "README.md")["model-index"][0]["results"]
    bbq = [e for e in entries if e["dataset"]["type"] == "Elfsong/BBQ"]
    assert sorted(e["dataset"]["split"] for e in bbq) == ["age", "gender_identity", "race_ethnicity", "religion",
                                                        "ses"]
    assert all("config" not in e["dataset"] for e in bbq)
    assert lint(tmp_path / "README.md").exit_code == 0
    full.metrics["limits"] = {"bbq_limit_per_category": 30, "ppl_rows": "16 x 256 (protocol: 256 x 512)"}
    write_results(results_file, full)
    assert CliRunner().invoke(main, ["card", "render", str(results_file)]).exit_code == 0
    card = (tmp_path / "README.md").read_text()
    assert "model-index" not in _front_matter(tmp_path / "README.md")
    assert "| perplexity |" in card and "| SRS (ambiguous, mean of categories) |" in card  # still in the table


def test_results_from_a_newer_schema_are_refused(run_dir, tmp_path):
    import json

    data = json.loads((run_dir / "results.json").read_text())
    data["schema_version"] = 99
    (tmp_path / "results.json").write_text(json.dumps(data))
    result = CliRunner().invoke(main, ["card", "render", str(tmp_path / "results.json")])
    assert result.exit_code == 2 and "schema version 99 is newer" in result.stderr


def test_a_base_without_license_gets_other_with_a_link_and_a_warning(tmp_path):
    model = save_tiny_model("llama", tmp_path / "base")  # no README: no license to inherit
    result = CliRunner().invoke(main, ["--model", str(model), "--sparsity", "0.5", "--dry-run", "-q",
                                       "--output-dir", str(tmp_path / "run"), "--base-model-id", "org/tiny"])
    assert result.exit_code == 0, result.output
    assert "warning: the base model's license could not be found" in result.stderr
    card = (tmp_path / "run" / "README.md").read_text()
    assert "license: other" in card and "license_link: https://huggingface.co/org/tiny" in card
