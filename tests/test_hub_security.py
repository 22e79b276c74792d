"""The token: read from a file, HF_TOKEN or the login cache; never in any output, file or emulator record."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import huggingface_hub.constants
import pytest
from click.testing import CliRunner
from test_hub_helpers import FAST, pruned_run

from publisher.cli import main
from publisher.emulator import HubEmulator
from publisher.errors import HubAuthError, PublishError
from publisher.hub.auth import resolve_token
from publisher.hub.publish import PushOptions, check_write_access, publish_run

SECRET = "hf_KnownFakeToken0123456789abcdefSECRET"
USER = "sec-user"
REPO = f"{USER}/tiny-magnitude-s50"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


@pytest.fixture(autouse=True)
def no_ambient_token(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-login-cache"))


def test_token_sources_in_order(tmp_path, monkeypatch, caplog):
    assert resolve_token() is None
    monkeypatch.setenv("HF_TOKEN", "hf_from_env_123")
    assert resolve_token() == "hf_from_env_123"
    token_file = tmp_path / "token"
    token_file.write_text(f"\n{SECRET}\n")
    token_file.chmod(0o600)
    assert resolve_token(token_file) == SECRET  # an explicit file wins over the environment
    token_file.chmod(0o644)
    with caplog.at_level(logging.WARNING):
        resolve_token(token_file)
    assert "readable by other users" in caplog.text and SECRET not in caplog.text
    token_file.write_text("  \n")
    with pytest.raises(HubAuthError, match="one token"):
        resolve_token(token_file)
    with pytest.raises(HubAuthError, match="cannot read the token file"):
        resolve_token(tmp_path / "missing")
    monkeypatch.delenv("HF_TOKEN")
    login_cache = tmp_path / "login-token"
    login_cache.write_text("hf_from_login_cache_123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(login_cache))
    assert resolve_token() == "hf_from_login_cache_123"


def secret_hits(*texts: str, folders: tuple[Path, ...] = ()) -> list[str]:
    """Where the secret shows up: 'text #i' for texts, file paths for files under `folders`."""
    hits = [f"text #{i}" for i, text in enumerate(texts) if SECRET in text]
    for folder in folders:
        hits += [str(p) for p in folder.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    return hits


def test_the_token_never_appears_in_outputs_files_or_the_hub(tmp_path_factory, tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    hub_root = tmp_path / "hub"
    with HubEmulator(root=hub_root, tokens={SECRET: (USER, "write")}, verbose=True) as hub:
        run = pruned_run(tmp_path_factory, tmp_path / "run", repo_id=REPO)
        token_file = tmp_path / "secrets" / "token"
        token_file.parent.mkdir()
        token_file.write_text(SECRET)
        token_file.chmod(0o600)
        from huggingface_hub import HfApi

        api = HfApi(endpoint=hub.url, token=resolve_token(token_file))
        assert check_write_access(api) == USER
        record = publish_run(api, REPO, run.output_dir, run.files, private=True, message="Publish",
                             results=run.results, options=PushOptions(retry=FAST, tag="v1", gated="auto",
                                                                      collection="Secrets test"))
        record_json = json.dumps(record.__dict__)

        hub.faults.add(r"/commit/", kind="status", status=422)  # an error path, with its message
        card = run.output_dir / "README.md"
        card.write_text(card.read_text() + "\nchanged\n")
        from publisher.runner import load_run

        with pytest.raises(PublishError) as failed:
            publish_run(api, REPO, run.output_dir, load_run(run.output_dir).files, private=False, message="m",
                        options=PushOptions(retry=FAST))

        cli = CliRunner(env={"HF_TOKEN": SECRET}).invoke(main, ["-v", "push", str(run.output_dir), "--hub-endpoint",
                                                                 hub.url, "--json"])
        assert cli.exit_code == 0, cli.output
        bad = CliRunner(env={"HF_TOKEN": SECRET[:-1]}).invoke(main, ["push", str(run.output_dir),
                                                                     "--hub-endpoint", hub.url])
        assert bad.exit_code == 2
    captured = capfd.readouterr()
    assert "hub-emulator: POST /api/repos/create -> 200" in captured.err  # the emulator did log requests
    hits = secret_hits(record_json, str(failed.value), cli.stdout, cli.stderr, bad.stdout, bad.stderr,
                       captured.out, captured.err, caplog.text, folders=(run.output_dir, hub_root))
    assert hits == []
    assert SECRET in token_file.read_text() and os.stat(token_file).st_mode & 0o777 == 0o600
