"""No absolute local path is published: card, results.json and the commit name local files relative to the working
folder, or by name with their sha256 (issue 15, point 8)."""

import json
import sys
import tempfile
from pathlib import Path

import huggingface_hub.constants
import pytest
from click.testing import CliRunner
from conftest import HUB_USER, HUB_WRITE_TOKEN
from huggingface_hub import HfApi, hf_hub_download
from tiny_models import save_tiny_model

from publisher.cli import main
from publisher.hashing import sha256_file
from publisher.local_paths import public_command, recorded_path
from publisher.release import Artifact, _published_identity


@pytest.fixture(autouse=True)
def no_login_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def leaks(text: str) -> list[str]:
    """The machine-specific prefixes found in `text`: the temporary folder and the user's home."""
    return [p for p in (tempfile.gettempdir().rstrip("/") + "/", str(Path.home()).rstrip("/") + "/") if p in text]


def test_recorded_paths_are_relative_under_the_working_folder_else_name_and_sha256(tmp_path, monkeypatch):
    work, outside = tmp_path / "work", tmp_path / "elsewhere"
    (work / "data").mkdir(parents=True)
    outside.mkdir()
    (outside / "text.jsonl").write_text('{"text": "w1"}\n')
    monkeypatch.chdir(work)
    assert recorded_path(work / "data" / "x.jsonl") == "data/x.jsonl"
    assert recorded_path("data/../data/x.jsonl") == "data/x.jsonl"
    assert recorded_path(outside / "text.jsonl") == "text.jsonl"
    digest = sha256_file(outside / "text.jsonl")
    assert recorded_path(outside / "text.jsonl", hash_content=True) == f"text.jsonl@sha256:{digest}"
    command = public_command(f"publish-pruned --model {outside} --sparsity 0.5 --ppl-data={outside}/text.jsonl "
                             f"--token-file {outside}/text.jsonl --output-dir {work}/runs/x --repo-id org/m "
                             "--hub-endpoint http://127.0.0.1:1/x", {str(outside): "c0ffee"})
    assert command == (f"publish-pruned --model elsewhere@sha256:c0ffee --sparsity 0.5 "
                       f"--ppl-data=text.jsonl@sha256:{digest} --token-file text.jsonl --output-dir runs/x "
                       "--repo-id org/m --hub-endpoint http://127.0.0.1:1/x")


def test_release_matches_results_written_with_absolute_paths_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path.parent / "models" / "m"  # outside the working folder
    artifact = Artifact(str(model), "magnitude", 0.5)
    identity = artifact.identity()
    assert identity["model"] == "m"
    old = {"settings": {**artifact.settings().as_dict(), "model": str(model)}}  # as older versions wrote it
    assert _published_identity(old, identity) == identity
    assert _published_identity({"settings": {**old["settings"], "model": "m"}}, identity) == identity


def test_a_run_from_a_folder_outside_the_working_folder_publishes_no_local_path(hub, tmp_path, monkeypatch):
    base = save_tiny_model("llama", tmp_path / "models" / "tiny", readme="---\nlicense: mit\n---\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    (tmp_path / "secret").mkdir()
    token_file = tmp_path / "secret" / "token"
    token_file.write_text(HUB_WRITE_TOKEN)
    token_file.chmod(0o600)
    card_config = tmp_path / "cfg" / "card.yaml"
    card_config.parent.mkdir()
    card_config.write_text("paper_title: A study\n")
    out = work / "runs" / "tiny"
    args = ["--model", str(base), "--sparsity", "0.5", "--hub-endpoint", hub.url, "--token-file", str(token_file),
            "--output-dir", str(out), "--base-model-id", "test-org/tiny", "--card-config", str(card_config), "--json"]
    monkeypatch.setattr(sys, "argv", ["publish-pruned", *args])  # what the console script records
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output

    repo_id = f"{HUB_USER}/tiny-magnitude-s50"
    api = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN)
    published = {name: Path(hf_hub_download(repo_id, name, endpoint=hub.url, token=HUB_WRITE_TOKEN,
                                            cache_dir=tmp_path / "download")).read_text()
                 for name in ("README.md", "results.json")}
    commit = api.list_repo_commits(repo_id)[0]
    published["commit"] = f"{commit.title}\n{commit.message}"
    for name, text in published.items():
        assert not leaks(text), (name, leaks(text))

    results = json.loads(published["results.json"])
    assert results["source"]["reference"] == results["settings"]["model"] == "tiny"
    content = results["source"]["content_sha256"]
    command = results["command"]
    assert f"--model tiny@sha256:{content}" in command and "--output-dir runs/tiny" in command
    assert f"--card-config card.yaml@sha256:{sha256_file(card_config)}" in command
    assert "--token-file token " in command  # a secret's file: its name only, never a hash of it
    assert f"from folder:tiny@{content}" in published["commit"]
    assert command in published["README.md"]

    again = CliRunner().invoke(main, args)  # the run folder's own records still resume it
    assert again.exit_code == 0, again.output
    summary = json.loads(again.stdout)
    assert {"prune", "sparsity"} <= set(summary["skipped_stages"]) and summary["changed"] is False
