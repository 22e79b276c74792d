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


def test_card_config_adds_paper_citation_and_arxiv_tag(run_dir, tmp_path):
    config = tmp_path / "card.yaml"
    config.write_text("paper_title: Weight Pruning Amplifies Bias\narxiv_id: '2605.08137'\n"
                      "bibtex: |\n  @inproceedings{rath2026pruning, title={Weight Pruning Amplifies Bias}}\n")
    out = tmp_path / "out.md"
    result = CliRunner().invoke(main, ["card", "render", str(run_dir / "results.json"), "--card-config",
                                       str(config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "- arxiv:2605.08137" in text and "@inproceedings{rath2026pruning" in text
    assert "license: gemma" in text and "[arXiv:2605.08137](https://arxiv.org/abs/2605.08137)" in text


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


def test_hub_datasets_and_bias_tag_in_metadata(run_dir, tmp_path):
    import yaml

    results_file = _with_hub_perplexity(run_dir, tmp_path)
    assert CliRunner().invoke(main, ["card", "render", str(results_file)]).exit_code == 0
    meta = yaml.safe_load((tmp_path / "README.md").read_text().split("---\n")[1])
    assert meta["datasets"] == ["allenai/tulu-3-sft-mixture"]
    assert "bias-evaluation" not in meta["tags"]  # SRS was not measured in this run


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
