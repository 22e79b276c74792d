"""Publishing through the real huggingface_hub client against the local Hub emulator."""

import hashlib
import json
from pathlib import Path

import huggingface_hub.constants
import pytest
from click.testing import CliRunner
from conftest import HUB_READ_TOKEN, HUB_USER, HUB_WRITE_TOKEN
from huggingface_hub import HfApi, snapshot_download
from tiny_models import save_tiny_model

from publisher.cli import main
from publisher.emulator import HubEmulator
from publisher.emulator.server import HubHandler

README = "---\nlicense: mit\n---\n"


@pytest.fixture
def model_dir(tmp_path):
    return save_tiny_model("llama", tmp_path / "base", readme=README)


@pytest.fixture(autouse=True)
def no_login_cache(tmp_path, monkeypatch):
    """Only the token a test sets exists: no HF_TOKEN from the environment, no cached login."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


def publish(hub, model_dir, out, *extra, token=HUB_WRITE_TOKEN):
    env = {"HF_TOKEN": token} if token else {}
    args = ["--model", str(model_dir), "--sparsity", "0.5", "--hub-endpoint", hub.url, "--output-dir", str(out),
            "--base-model-id", "test-org/tiny", "--json", *extra]
    return CliRunner(env=env).invoke(main, args)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def local_files(out: Path) -> dict[str, str]:
    """What should be on the Hub: the run folder minus its state and the local-only preview."""
    return {str(p.relative_to(out)): sha256(p) for p in out.rglob("*")
            if p.is_file() and ".publish-pruned" not in p.parts and p.name != "preview.html"}


def test_publish_round_trip_every_file_identical(hub, model_dir, tmp_path):
    out = tmp_path / "run"
    result = publish(hub, model_dir, out)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    repo_id = f"{HUB_USER}/tiny-magnitude-s50"
    assert summary["repo_id"] == repo_id and summary["url"].endswith(repo_id) and summary["changed"] is True

    api = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN)
    commits = api.list_repo_commits(repo_id)
    assert commits[0].commit_id == summary["commit"]
    assert len([c for c in commits if c.commit_id != commits[-1].commit_id]) == 1  # one commit besides the initial
    downloaded = Path(snapshot_download(repo_id, endpoint=hub.url, token=HUB_WRITE_TOKEN,
                                        cache_dir=tmp_path / "cache"))
    remote = {str(p.relative_to(downloaded)): sha256(p) for p in downloaded.rglob("*") if p.is_file()}
    assert remote == local_files(out)
    assert {"README.md", "results.json", "model.safetensors", "config.json", "plots/layer_sparsity.png"} <= set(remote)
    assert "preview.html" not in remote
    assert json.loads((downloaded / "results.json").read_text())["sparsity"]["actual_sparsity"] == 0.5
    assert not (out / ".publish-pruned" / "publish.json").read_text().count(HUB_WRITE_TOKEN)


def test_publishing_the_same_run_again_makes_no_commit(hub, model_dir, tmp_path):
    out = tmp_path / "run"
    first = json.loads(publish(hub, model_dir, out).stdout)
    second = publish(hub, model_dir, out)
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout)
    assert again["changed"] is False and again["commit"] == first["commit"]
    assert again["skipped_stages"] == ["prune", "sparsity", "measure"]


def test_no_token_fails_before_any_work_and_creates_nothing(hub, model_dir, tmp_path):
    out = tmp_path / "run"
    result = publish(hub, model_dir, out, token=None)
    assert result.exit_code == 2 and json.loads(result.stderr)["error"].startswith("no Hub token")  # --json
    assert not out.exists()
    assert not HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN).repo_exists(f"{HUB_USER}/tiny-magnitude-s50")


@pytest.mark.parametrize(("token", "message"), [(HUB_READ_TOKEN, "'read'-only"),
                                                ("hf_not_a_real_token_123", "rejected the token")])
def test_read_only_or_invalid_token_is_refused(hub, model_dir, tmp_path, token, message):
    out = tmp_path / "run"
    result = publish(hub, model_dir, out, token=token)
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert token not in result.output
    assert not out.exists()
    assert not HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN).repo_exists(f"{HUB_USER}/tiny-magnitude-s50")


def test_a_failed_commit_leaves_no_half_created_repo(hub, model_dir, tmp_path, monkeypatch):
    def reject(handler, repo, revision):  # server-side fault: the Hub refuses the commit
        handler._discard_body()
        handler._send_json({"error": "commit rejected by test"}, status=422)

    out = tmp_path / "run"
    with monkeypatch.context() as patched:
        patched.setattr(HubHandler, "_commit", reject)
        result = publish(hub, model_dir, out)
    assert result.exit_code == 3 and "nothing was committed" in result.stderr, result.output
    assert not HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN).repo_exists(f"{HUB_USER}/tiny-magnitude-s50")
    assert (out / "results.json").is_file()  # the local run is kept: re-running publishes without recomputing

    retry = publish(hub, model_dir, out)
    assert retry.exit_code == 0 and json.loads(retry.stdout)["skipped_stages"] == ["prune", "sparsity", "measure"]


def test_hub_local_publishes_to_a_folder_that_outlives_the_process(model_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["--model", str(model_dir), "--sparsity", "0.5", "--hub", "local",
                                       "--base-model-id", "test-org/tiny", "--suffix", "pia"])
    assert result.exit_code == 0, result.output
    assert "local-user/tiny-magnitude-s50-pia" in result.stdout and "local-hub" in result.stdout
    out = tmp_path / "runs" / "tiny-magnitude-s50-pia"
    with HubEmulator(root=tmp_path / "local-hub", tokens={"hf_again": ("local-user", "write")}) as again:
        downloaded = Path(snapshot_download("local-user/tiny-magnitude-s50-pia", endpoint=again.url,
                                            token="hf_again", cache_dir=tmp_path / "cache"))
        remote = {str(p.relative_to(downloaded)): sha256(p) for p in downloaded.rglob("*") if p.is_file()}
    assert remote == local_files(out)


def test_private_flag_creates_a_private_repo(hub, model_dir, tmp_path):
    assert publish(hub, model_dir, tmp_path / "run", "--private").exit_code == 0
    repo_id = f"{HUB_USER}/tiny-magnitude-s50"
    assert HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN).model_info(repo_id).private is True
    assert not HfApi(endpoint=hub.url, token=False).repo_exists(repo_id)


def upload_base_model(hub, folder, repo_id="test-org/tiny-base", **kwargs):
    api = HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN)
    api.create_repo(repo_id)
    return api.upload_folder(repo_id=repo_id, folder_path=folder, **kwargs).oid


@pytest.fixture
def hub_with_org(tmp_path):
    """An emulator where the write token's owner is 'test-org', to host base models."""
    tokens = {HUB_WRITE_TOKEN: ("test-org", "write")}
    with HubEmulator(root=tmp_path / "hub", tokens=tokens) as emulator:
        yield emulator


def test_base_model_from_the_hub_is_pinned_to_its_commit_and_inherits_its_card(
        hub_with_org, model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    commit = upload_base_model(hub_with_org, model_dir)
    out = tmp_path / "run"
    result = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, [
        "--model", "test-org/tiny-base", "--sparsity", "0.3", "--hub-endpoint", hub_with_org.url,
        "--output-dir", str(out), "--json", "-q"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["repo_id"] == "test-org/tiny-base-magnitude-s30" and summary["changed"] is True
    results = json.loads((out / "results.json").read_text())
    assert results["source"]["kind"] == "hub" and results["source"]["revision"] == commit
    assert results["source"]["license"] == "mit" and results["source"]["base_model_id"] == "test-org/tiny-base"
    assert "base_model: test-org/tiny-base" in (out / "README.md").read_text()


@pytest.mark.parametrize(("model", "files", "message"), [
    ("test-org/missing", None, "not found on the Hub"),
    ("test-org/pickled", {"config.json": b"{}", "pytorch_model.bin": b"x"}, "--trust-pickled-weights"),
    ("test-org/empty", {"config.json": b"{}"}, "holds no model weights"),
])
def test_unusable_hub_models_are_refused_in_one_line(hub_with_org, tmp_path, model, files, message):
    if files:
        folder = tmp_path / "upload"
        folder.mkdir()
        for name, data in files.items():
            (folder / name).write_bytes(data)
        upload_base_model(hub_with_org, folder, repo_id=model)
    result = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, [
        "--model", model, "--sparsity", "0.5", "--hub-endpoint", hub_with_org.url,
        "--output-dir", str(tmp_path / "run")])
    assert result.exit_code == 2 and message in result.stderr, result.output
    assert not (tmp_path / "run").exists()


def test_push_publishes_a_dry_run_under_the_token_owner_and_refuses_a_tampered_one(hub, model_dir, tmp_path):
    out = tmp_path / "run"
    dry = CliRunner().invoke(main, ["--model", str(model_dir), "--sparsity", "0.5", "--dry-run", "-q",
                                    "--output-dir", str(out), "--base-model-id", "test-org/tiny"])
    assert dry.exit_code == 0, dry.output
    pushed = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(
        main, ["push", str(out), "--hub-endpoint", hub.url, "--json"])
    assert pushed.exit_code == 0, pushed.output
    assert json.loads(pushed.stdout)["repo_id"] == f"{HUB_USER}/tiny-magnitude-s50"

    (out / "config.json").write_text((out / "config.json").read_text() + " ")
    tampered = CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(
        main, ["push", str(out), "--hub-endpoint", hub.url, "--repo-id", f"{HUB_USER}/other"])
    assert tampered.exit_code == 2 and "no longer matches the sha256" in tampered.stderr
    assert not HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN).repo_exists(f"{HUB_USER}/other")
