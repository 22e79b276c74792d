"""The CLI's push options, `card sync` and `release`, end to end against the emulator (needs the lead's patch)."""

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
import yaml
from click.testing import CliRunner
from conftest import HUB_USER, HUB_WRITE_TOKEN
from huggingface_hub import HfApi
from tiny_models import save_tiny_model

from publisher.cli import main

README = "---\nlicense: mit\n---\n"


@pytest.fixture(autouse=True)
def no_login_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def test_cli_push_options_card_sync_and_release(hub, tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base", readme=README)
    token_file = tmp_path / "tok"
    token_file.write_text(HUB_WRITE_TOKEN)
    token_file.chmod(0o600)
    out = tmp_path / "run"
    args = ["--model", str(model_dir), "--sparsity", "0.5", "--hub-endpoint", hub.url, "--output-dir", str(out),
            "--base-model-id", "test-org/tiny", "--json", "--token-file", str(token_file), "--branch", "pruned/v1",
            "--tag", "v1/s50", "--gated", "manual", "--collection", "Tiny pruned"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["revision"] == "pruned/v1" and s["tag"] == "v1/s50" and s["collection"]
    assert s["sparsity_check"]["shard"] == "model.safetensors" and "README.md" in s["committed"]
    text = CliRunner().invoke(main, ["push", str(out), "--hub-endpoint", hub.url, "--token-file", str(token_file),
                                     "--branch", "pruned/v1"])
    assert text.exit_code == 0 and "no change" in text.stdout and "re-measured" in text.stdout, text.output
    assert HUB_WRITE_TOKEN not in r.output + text.output

    card = out / "README.md"
    card.write_text(card.read_text().replace("## Pruning configuration", "## Pruning configuration\n\nNew line."))
    dry = CliRunner().invoke(main, ["card", "sync", str(out), "--dry-run", "--hub-endpoint", hub.url,
                                    "--revision", "pruned/v1", "--diff-out", str(tmp_path / "d.patch")])
    assert dry.exit_code == 0, dry.output
    assert "+New line." in dry.stdout and "would-update" in dry.stderr
    assert (tmp_path / "d.patch").read_text() == dry.stdout
    real = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, ["card", "sync", str(out), "--hub-endpoint",
                                                                      hub.url, "--revision", "pruned/v1"])
    assert real.exit_code == 0 and "updated" in real.stderr, real.output

    manifest = tmp_path / "release.yaml"
    manifest.write_text(yaml.safe_dump({"models": [{"model": str(model_dir), "base_model_id": "test-org/tiny"}],
                                        "methods": ["magnitude", "random"], "sparsities": [0.3],
                                        "push": {"tag": "r1"}}))
    args = ["release", str(manifest), "--hub-endpoint", hub.url, "--output-root", str(tmp_path / "runs"),
            "--summary", str(tmp_path / "sum.json")]
    first = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, args)
    assert first.exit_code == 0, first.output
    assert "release: 2 published" in first.stdout
    second = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, [*args, "--shard", "2/2"])
    assert second.exit_code == 0 and "release: 1 skipped" in second.stdout, second.output
    data = json.loads((tmp_path / "sum.json").read_text())
    assert data["shard"] == "2/2" and data["artifacts"][0]["key"].endswith(":random:s30")
    api = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN)
    assert [t.name for t in api.list_repo_refs(f"{HUB_USER}/tiny-random-s30").tags] == ["r1"]
    dry = CliRunner().invoke(main, ["release", str(manifest), "--dry-run", "--output-root", str(tmp_path / "d")])
    assert dry.exit_code == 0 and "release: 2 dry-run" in dry.stdout, dry.output


def release(hub, tmp_path, grid, exit_code=0):
    manifest = tmp_path / "release.yaml"
    manifest.write_text(yaml.safe_dump(grid))
    args = ["release", str(manifest), "--hub-endpoint", hub.url, "--output-root", str(tmp_path / "runs")]
    result = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, args)
    assert result.exit_code == exit_code, result.output
    return result.stdout


def test_release_skips_only_what_the_hub_holds_from_the_same_base_and_applies_this_manifests_push(hub, tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base", readme=README)
    grid = {"models": [{"model": str(model_dir), "base_model_id": "test-org/tiny"}], "methods": ["magnitude"],
            "sparsities": [0.5], "push": {"tag": "v1"}}
    assert "release: 1 published" in release(hub, tmp_path, grid)
    api, repo = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN), f"{HUB_USER}/tiny-magnitude-s50"

    grid["push"] = {"tag": "v2", "collection": "Tiny v2"}  # same weights, another release: tag and collect them
    assert "release: 1 skipped" in release(hub, tmp_path, grid)
    assert sorted(t.name for t in api.list_repo_refs(repo).tags) == ["v1", "v2"]
    assert any(item.item_id == repo for c in api.list_collections(owner=HUB_USER) for item in
               api.get_collection(c.slug).items)

    grid["push"] = {"branch": "pruned/v3"}  # no such branch yet: publish there (main's files, so no new commit)
    assert "release: 1 unchanged" in release(hub, tmp_path, grid)
    assert "pruned/v3" in [b.name for b in api.list_repo_refs(repo).branches]
    assert "release: 1 skipped" in release(hub, tmp_path, grid)  # and now the branch holds it

    save_tiny_model("llama", model_dir, seed=1, readme=README)  # other weights at the same path: not the same
    out = release(hub, tmp_path, grid, exit_code=3)  # artifact; the publish refuses another base checkpoint
    assert "release: 1 failed" in out and "another checkpoint of the base model" in out


def test_push_publishes_the_cards_own_plots_not_leftovers(hub, tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base", readme=README)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["--model", str(model_dir), "--sparsity", "0.5", "--dry-run", "-q",
                                  "--output-dir", str(out), "--base-model-id", "test-org/tiny"])
    assert r.exit_code == 0, r.output
    drawn = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert drawn and not list(out.glob("**/.*.tmp"))  # written through temp files, none left
    (out / "plots" / "old_leftover.png").write_bytes(b"\x89PNG not ours")
    pushed = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, ["push", str(out), "--hub-endpoint", hub.url,
                                                                        "--repo-id", f"{HUB_USER}/tiny-plots"])
    assert pushed.exit_code == 0, pushed.output
    files = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN).list_repo_files(f"{HUB_USER}/tiny-plots")
    assert sorted(f.split("/")[1] for f in files if f.startswith("plots/")) == drawn


def test_push_after_a_local_rehearsal_targets_the_token_owner_and_the_card_names_the_final_repo(hub, tmp_path):
    model_dir = save_tiny_model("llama", tmp_path / "base", readme=README)
    out = tmp_path / "run"
    rehearsal = CliRunner().invoke(main, ["--model", str(model_dir), "--sparsity", "0.5", "-q", "--hub", "local",
                                          "--hub-dir", str(tmp_path / "local-hub"), "--output-dir", str(out),
                                          "--base-model-id", "test-org/tiny"])
    assert rehearsal.exit_code == 0, rehearsal.output
    assert 'from_pretrained("local-user/tiny-magnitude-s50")' in (out / "README.md").read_text()

    env = {"HF_TOKEN": HUB_WRITE_TOKEN}
    pushed = CliRunner(env=env).invoke(main, ["push", str(out), "--hub-endpoint", hub.url, "--json"])
    assert pushed.exit_code == 0, pushed.output
    repo = f"{HUB_USER}/tiny-magnitude-s50"  # the token's owner, never local-user on the real Hub
    assert json.loads(pushed.stdout)["repo_id"] == repo
    api = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN)
    card = Path(api.hf_hub_download(repo, "README.md")).read_text()
    assert "local-user" not in card
    for snippet in (f'AutoModelForCausalLM.from_pretrained("{repo}")', f'load("{repo}")', f'LLM(model="{repo}")'):
        assert snippet in card, snippet
    assert json.loads(Path(api.hf_hub_download(repo, "results.json")).read_text())["settings"]["repo_id"] == repo

    renamed = CliRunner(env=env).invoke(main, ["push", str(out), "--hub-endpoint", hub.url,
                                               "--repo-id", f"{HUB_USER}/tiny-renamed"])
    assert renamed.exit_code == 0, renamed.output
    card = Path(api.hf_hub_download(f"{HUB_USER}/tiny-renamed", "README.md")).read_text()
    assert f'from_pretrained("{HUB_USER}/tiny-renamed")' in card and "tiny-magnitude-s50" not in card
