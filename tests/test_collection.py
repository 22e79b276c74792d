"""Cards as code: the checked-in cards of `model_cards/` lint, match their manifest, and show the paper's figures."""

import re
import shutil
from pathlib import Path

import pytest
import yaml

from publisher.card.collection import load_manifest, render_collection
from publisher.card.lint import lint_card
from publisher.errors import CardError
from publisher.hub.remote import CARD_MARKER

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "model_cards" / "rath2026-pia.yaml"
MANIFESTS = sorted((ROOT / "model_cards").glob("*.yaml"))
CARDS = sorted((ROOT / "model_cards").glob("*/*/README.md"))


def card(name: str) -> str:
    return (STUDY.parent / "rath2026-pia" / name / "README.md").read_text()


def section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def metric_table(text: str) -> dict[str, tuple[str, str]]:
    rows = {}
    for line in section(text, "Reported metrics").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 3 and cells[0] != "metric" and set(cells[1]) != {"-"}:
            rows[cells[0]] = (cells[1], cells[2])
    return rows


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.parent.name)
def test_every_checked_in_card_passes_lint(path):
    text = path.read_text()
    lint_card(text)
    assert text.split("\n---\n", 1)[1].startswith(CARD_MARKER + "\n")


@pytest.mark.parametrize("manifest", MANIFESTS, ids=lambda p: p.stem)
def test_checked_in_cards_are_what_the_manifest_renders(manifest):
    stale = render_collection(manifest, check=True)
    assert not stale, (f"{len(stale)} card(s) differ from {manifest.name}; re-render with "
                       f"`publish-pruned card render --all {manifest.relative_to(ROOT)}`: {stale[:3]}")


def test_the_study_collection_has_36_cards_with_the_study_repo_names():
    manifest = load_manifest(STUDY)
    ids = [a.repo_id for a in manifest.artifacts()]
    assert len(ids) == len(set(ids)) == 36
    assert "pia-lab/gemma-2-9b-it-magnitude-s50-pia" in ids
    assert "pia-lab/mistral-7b-instruct-v0.3-wanda-s10-pia" in ids
    assert "pia-lab/phi-3.5-mini-instruct-random-s70-pia" in ids
    pattern = re.compile(r"pia-lab/(gemma-2-9b-it|mistral-7b-instruct-v0\.3|phi-3\.5-mini-instruct)"
                         r"-(random|magnitude|wanda)-s(10|30|50|70)-pia")
    assert all(pattern.fullmatch(i) for i in ids)
    folders = {p.name for p in (STUDY.parent / "rath2026-pia").iterdir()}
    assert folders == {i.split("/")[1] for i in ids}


@pytest.mark.parametrize(("name", "license_", "link"), [
    ("gemma-2-9b-it-random-s10-pia", "gemma", "https://ai.google.dev/gemma/terms"),
    ("mistral-7b-instruct-v0.3-wanda-s70-pia", "apache-2.0", None),
    ("phi-3.5-mini-instruct-magnitude-s30-pia", "mit", None),
])
def test_front_matter_inherits_the_license_and_carries_the_study_tags(name, license_, link):
    meta = yaml.safe_load(card(name).split("\n---\n", 1)[0][4:])
    method = name.split("-")[-3]
    assert meta["license"] == license_ and meta.get("license_link") == link
    assert meta["tags"] == ["pruning", method, "bias-evaluation", "llm-compression", "arxiv:2605.08137",
                            "research-only"]
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert meta["language"] == ["en"]


def test_sections_follow_the_study_order():
    text = card("gemma-2-9b-it-wanda-s50-pia")
    assert "# google/gemma-2-9b-it — wanda pruning at 50% target sparsity\n" in text
    marks = ["# google/gemma-2-9b-it", "Research use only", "**Paper:**", "**Base model:**", "**License:**",
             "## Pruning configuration", "## Method", "## Reported metrics", "## Caveats for edge deployment",
             "## Citation"]
    positions = [text.index(m) for m in marks]
    assert positions == sorted(positions)
    assert "calibration set | 128 C4 samples (allenai/c4, en) of 2048 tokens" in text
    citation = section(text, "Citation")
    for field in ("@inproceedings{rath2026pruning,", "booktitle     = {Proc. IEEE AIIoT 2026}",
                  "eprint        = {2605.08137}", "archivePrefix = {arXiv}", "primaryClass  = {cs.LG}"):
        assert field in citation


SRS_CATEGORIES = ("Age", "Gender", "Race", "Religion", "SES")


def test_golden_figures_of_magnitude_s50():
    text = card("gemma-2-9b-it-magnitude-s50-pia")
    config = section(text, "Pruning configuration")
    assert "| actual sparsity (reported by the paper) | 50.11 % |" in config
    assert "| zeroed parameters (reported by the paper) | 4,170,814,390 of 8,323,596,288 prunable (50.11 %) |" in config
    assert "| prune wall time (reported by the paper) | 4.6 s |" in config
    assert "threshold" in config  # the study's tie policy is stated
    rows = metric_table(text)
    assert rows["perplexity (Tulu-3 SFT mix, 256 × 512 tokens)"] == ("54.05", "dense 8.94")
    assert rows["perplexity change vs dense"] == ("+504.6 %", "dense 8.94")
    for category, value in zip(SRS_CATEGORIES, ("0.179", "0.031", "0.011", "0.070", "0.019"), strict=True):
        assert rows[f"SRS, {category} (BBQ ambiguous)"][0] == value
    assert rows["latency per BBQ prompt"][0] == "0.455 s"
    assert "reported by the paper (arXiv 2605.08137), not measured by publish-pruned" in " ".join(text.split())


def test_golden_figures_of_wanda_s50_with_the_skipped_projections():
    text = card("gemma-2-9b-it-wanda-s50-pia")
    config = section(text, "Pruning configuration")
    row = next(line for line in config.splitlines() if line.startswith("| actual sparsity"))
    assert "| 33.33 % —" in row and "o_proj" in row and "down_proj" in row
    rows = metric_table(text)
    assert rows["perplexity (Tulu-3 SFT mix, 256 × 512 tokens)"] == ("13.10", "dense 8.94")
    assert rows["perplexity change vs dense"] == ("+46.5 %", "dense 8.94")
    for category, value in zip(SRS_CATEGORIES, ("0.193", "0.016", "0.014", "0.088", "0.015"), strict=True):
        assert rows[f"SRS, {category} (BBQ ambiguous)"][0] == value
    assert rows["SRS overall (mean of categories)"] == ("0.065", "dense 0.065")
    assert rows["new-bias emergence"][0] == "1.30 %"
    assert "latency per BBQ prompt" not in rows and "zeroed parameters" not in config
    assert "Not reported by the paper for this checkpoint, so not shown: zeroed parameters, prune wall time, " \
           "latency." in text


def test_the_studys_wanda_is_described_as_its_code_ran_with_a_link_to_that_code():
    """The study collected every block's activation norms in one pass on the dense model, with its own block
    forward: its Wanda cards must not say each block saw the pruned outputs of the blocks before it."""
    text = " ".join(card("gemma-2-9b-it-wanda-s50-pia").split())
    assert "each block fed the pruned outputs" not in text
    assert "one pass over the dense model" in text and "no Gemma-2 embedding scaling" in text
    assert "https://github.com/plawanrath/pruning-impact-analysis" in text
    # the headline caveat names its setting: Wanda at a 50 % target on Mistral-7B, about 33 % pruned in fact
    assert "Wanda at a 50 % target on Mistral-7B-Instruct-v0.3" in text and "about 33 %" in text


def test_golden_figures_of_random_s50():
    text = card("gemma-2-9b-it-random-s50-pia")
    assert "| actual sparsity (reported by the paper) | 50.00 % |" in section(text, "Pruning configuration")
    rows = metric_table(text)
    assert rows["perplexity (Tulu-3 SFT mix, 256 × 512 tokens)"] == ("5,477,545", "dense 8.94")
    assert "perplexity change vs dense" not in rows  # the paper gives none; not computed
    for category, value in zip(SRS_CATEGORIES, ("0.337", "0.317", "0.331", "0.315", "0.340"), strict=True):
        assert rows[f"SRS, {category} (BBQ ambiguous)"][0] == value
    assert rows["latency per BBQ prompt"][0] == "0.455 s"


@pytest.mark.parametrize(("name", "latency"), [("mistral-7b-instruct-v0.3-random-s10-pia", "0.267 s"),
                                               ("phi-3.5-mini-instruct-random-s10-pia", "0.158 s")])
def test_other_reported_latencies(name, latency):
    text = card(name)
    rows = metric_table(text)
    assert list(rows) == ["latency per BBQ prompt"] and rows["latency per BBQ prompt"][0] == latency
    assert f"{latency} ({name.split('-')[-3]} s10, this checkpoint)" in section(text, "Caveats for edge deployment")


def test_a_card_without_reported_figures_shows_no_numbers_in_its_metrics():
    text = card("mistral-7b-instruct-v0.3-wanda-s50-pia")
    metrics = section(text, "Reported metrics")
    assert not metric_table(text)
    assert not re.search(r"\d", metrics.replace("2605.08137", "")), metrics
    assert "Not reported: actual sparsity, zeroed parameters" in metrics
    assert "| actual sparsity" not in section(text, "Pruning configuration")
    assert "+3.5 %" not in text and "3.5 %" in section(text, "Caveats for edge deployment")  # the study's finding


def copy_study(tmp_path: Path) -> Path:
    target = tmp_path / "rath2026-pia.yaml"
    shutil.copy(STUDY, target)
    shutil.copytree(STUDY.parent / "rath2026-pia", tmp_path / "rath2026-pia")
    return target


def test_check_names_a_card_that_drifted_and_render_repairs_it(tmp_path):
    manifest = copy_study(tmp_path)
    drifted = tmp_path / "rath2026-pia" / "gemma-2-9b-it-magnitude-s50-pia" / "README.md"
    drifted.write_text(drifted.read_text().replace("54.05", "54.06"))
    (tmp_path / "rath2026-pia" / "phi-3.5-mini-instruct-wanda-s70-pia" / "README.md").unlink()
    stale = tmp_path / "rath2026-pia" / "old-checkpoint-s99-pia" / "README.md"
    stale.parent.mkdir()
    stale.write_text("old")
    found = render_collection(manifest, check=True)
    assert {p.parent.name for p in found} == {"gemma-2-9b-it-magnitude-s50-pia", "phi-3.5-mini-instruct-wanda-s70-pia",
                                              "old-checkpoint-s99-pia"}
    assert len(render_collection(manifest)) == 36
    assert render_collection(manifest, check=True) == [stale]


def test_a_template_change_is_caught(tmp_path):
    manifest = copy_study(tmp_path)
    templates = tmp_path / "templates" / "partials"
    templates.mkdir(parents=True)
    (templates / "reported_method.md.j2").write_text("## Method\n\n{{ description }} Changed.\n")
    assert len(render_collection(manifest, check=True, template_dir=tmp_path / "templates")) == 36


def test_card_config_may_be_a_separate_file(tmp_path):
    manifest = copy_study(tmp_path)
    data = yaml.safe_load(manifest.read_text())
    (tmp_path / "card.yaml").write_text(yaml.safe_dump(data.pop("card")))
    manifest.write_text(yaml.safe_dump({**data, "card_config": "card.yaml"}, allow_unicode=True, sort_keys=False))
    assert render_collection(manifest, check=True) == []


@pytest.mark.parametrize(("edit", "problem"), [
    (lambda t: t.replace('perplexity: "54.05"', "perplexity: 54.05"), "quoted number exactly as the paper printed"),
    (lambda t: t.replace('perplexity: "54.05"', 'perplexity: "64.05"'), "not the reported perplexity_change"),
    (lambda t: t.replace('zero_params: "4,170,814,390"', 'zero_params: "4,070,814,390"'),
     "not the reported actual_sparsity"),
    (lambda t: t.replace("gemma-2-9b-it-random-s50-pia:", "gemma-2-9b-it-random-s55-pia:"),
     "not in the collection: gemma-2-9b-it-random-s55-pia"),
    (lambda t: t.replace("latency_s: \"0.267\"", "latency: \"0.267\""), "unknown keys: latency"),
    (lambda t: t.replace("  venue:", "  conference:"), "card has unknown keys: conference"),
])
def test_manifest_mistakes_are_named(tmp_path, edit, problem):
    manifest = tmp_path / "m.yaml"
    manifest.write_text(edit(STUDY.read_text()))
    with pytest.raises(CardError, match=re.escape(problem)):
        load_manifest(manifest)
