"""A rerun reuses a stage's stored result only when everything that decides it is unchanged (measure stage,
dense-baseline cache, run folder), and publishes nothing left over from another measurement."""

import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from fixtures.measure_models import FIXTURES, tiny_chat_model

from publisher.cli import main
from publisher.hashing import sha256_file
from publisher.results import read_results


def write_text(path, seed):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(40):
            f.write(json.dumps({"text": " ".join(f"w{rng.randrange(126)}" for _ in range(60))}) + "\n")


@pytest.fixture
def setup(tmp_path):
    model, tokenizer = tiny_chat_model()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    write_text(tmp_path / "text.jsonl", 0)
    shutil.copytree(FIXTURES / "bbq", tmp_path / "bbq")
    return tmp_path


def run(setup, out, sparsity="0.5", *extra):
    result = CliRunner().invoke(main, [
        "--model", str(setup / "base"), "--sparsity", sparsity, "--dry-run", "--json", "-q",
        "--output-dir", str(out), "--base-model-id", "test-org/tiny-chat", "--cache-dir", str(setup / "cache"),
        "--skip-eval", "latency", "--ppl-data", str(setup / "text.jsonl"), "--ppl-samples", "4",
        "--ppl-seq-len", "64", "--bbq-path", str(setup / "bbq"), "--bbq-categories", "all", "--bbq-limit", "3",
        *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_an_unchanged_rerun_reuses_the_measurements_and_an_edited_data_file_is_measured_again(setup):
    out = setup / "run"
    run(setup, out)
    assert "measure" in run(setup, out)["skipped_stages"]
    write_text(setup / "text.jsonl", 1)  # other text at the same path
    again = run(setup, out)
    assert "measure" not in again["skipped_stages"] and "prune" in again["skipped_stages"]
    data = read_results(out / "results.json").metrics["perplexity"]["pruned"]["data"]
    assert data["source_sha256"] == sha256_file(setup / "text.jsonl")


def test_edited_bbq_data_is_not_paired_with_a_cached_dense_baseline_of_other_items(setup):
    run(setup, setup / "run50", "0.5")
    (setup / "bbq" / "SES.jsonl").unlink()
    run(setup, setup / "run30", "0.3")
    metrics = read_results(setup / "run30" / "results.json").metrics
    assert metrics["dense_baseline"]["reused"] is False
    dense = sorted(g["category"] for g in metrics["srs"]["dense"]["per_category"])
    assert dense == sorted(g["category"] for g in metrics["srs"]["pruned"]["per_category"])
    assert "SES" not in dense


def test_a_rerun_that_skips_srs_publishes_no_reply_files_of_the_earlier_run(setup):
    out = setup / "run"
    run(setup, out)
    assert (out / "eval" / "srs_replies_pruned.jsonl").is_file()
    run(setup, out, "0.5", "--skip-eval", "srs,latency")
    assert "srs" not in read_results(out / "results.json").metrics
    assert not list((out / "eval").glob("srs_replies_*.jsonl"))
    assert json.loads((out / ".publish-pruned" / "measure.json").read_text())["files"] == {}


def test_a_damaged_reply_file_is_measured_again_not_published(setup):
    out = setup / "run"
    run(setup, out)
    replies = out / "eval" / "srs_replies_pruned.jsonl"
    whole = replies.read_bytes()
    replies.write_bytes(whole[:100])  # cut off, as by a full disk
    assert "measure" not in run(setup, out)["skipped_stages"]
    assert replies.read_bytes() == whole


def test_a_magnitude_run_folder_ignores_calibration_settings(setup):
    out = setup / "run"
    run(setup, out, "0.5", "--skip-eval", "ppl,srs,latency")
    again = run(setup, out, "0.5", "--skip-eval", "ppl,srs,latency", "--calibration-samples", "64")
    assert "prune" in again["skipped_stages"]  # not "holds a different run"


def test_the_measure_settings_hash_the_same_in_every_process():
    code = ("from publisher.evaluation import EvalSettings; from publisher.settings import stable_hash; "
            "print(stable_hash(EvalSettings(skip=frozenset({'srs', 'latency', 'ppl'})).key()))")
    keys = {subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED=seed),
                           capture_output=True, text=True, check=True).stdout.strip() for seed in "012345"}
    assert len(keys) == 1


def test_a_local_base_is_pinned_by_everything_its_tokenizer_template_and_code_are_read_from(tmp_path):
    from tiny_models import save_tiny_model

    from publisher.model_io import resolve_source
    from publisher.settings import RunSettings

    folder = save_tiny_model("llama", tmp_path / "base")
    settings = RunSettings(model=str(folder), sparsity=0.5)
    pins = [resolve_source(settings).content_sha256]
    for name, text in (("chat_template.jinja", "{{ messages }}"), ("merges.txt", "a b"), ("modeling_x.py", "x = 1")):
        (folder / name).write_text(text)
        pins.append(resolve_source(settings).content_sha256)
    assert len(set(pins)) == 4


def test_a_local_base_is_read_once_per_process_while_unchanged(tmp_path, monkeypatch):
    """A release grid resolves the same local base for every artifact: hashed once, again only after a write."""
    from publisher import hashing
    from publisher.model_io import resolve_source
    from publisher.settings import RunSettings

    model, tokenizer = tiny_chat_model()
    model.save_pretrained(tmp_path / "base")
    tokenizer.save_pretrained(tmp_path / "base")
    reads = []
    monkeypatch.setattr(hashing, "sha256_file", lambda path: reads.append(path) or sha256_file(path))
    settings = RunSettings(model=str(tmp_path / "base"), sparsity=0.5)
    first = resolve_source(settings).content_sha256
    files = len(reads)
    assert files >= 3 and resolve_source(settings).content_sha256 == first and len(reads) == 2 * files  # all new
    monkeypatch.setattr(hashing, "_SETTLED_NS", 0)  # as if written long ago
    resolve_source(settings)
    assert resolve_source(settings).content_sha256 == first and len(reads) == 3 * files
    config = tmp_path / "base" / "config.json"
    config.write_text(config.read_text() + " ")  # the same JSON, one byte more
    assert resolve_source(settings).content_sha256 != first and len(reads) == 3 * files + 1
