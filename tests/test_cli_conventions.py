"""CLI conventions (issue 15, point 10): an explicit `run` verb, no silently ignored options, -v/-q/--json on every
command, env vars in --help, one exit code for "the Hub is unavailable", one way to start the emulator."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import huggingface_hub.constants
import pytest
import yaml
from click.testing import CliRunner
from conftest import HUB_WRITE_TOKEN
from tiny_models import save_tiny_model

from publisher.cli import main, run_command
from publisher.errors import HUB_UNAVAILABLE
from publisher.hub.serve import serve_command

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures"
ENV_EXCEPTIONS = {"HF_ENDPOINT", "PUBLISH_PRUNED_CACHE"}  # the Hub client's own; the cache's, older than the rule


def invoke(*args, env=None):
    return CliRunner(env=env).invoke(main, [str(a) for a in args])


def commands(command=main, path=()):
    """(name path, command) of every command and group under `main`, `main` included."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


@pytest.fixture(autouse=True)
def no_login_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model("llama", tmp_path_factory.mktemp("base") / "tiny", readme="---\nlicense: mit\n---\n")


@pytest.fixture(scope="module")
def dry_run(model_dir, tmp_path_factory):
    """A finished run folder (dry run: never pushed)."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    result = invoke("--model", model_dir, "--sparsity", "0.5", "--dry-run", "-q", "--output-dir", out,
                    "--base-model-id", "test-org/tiny")
    assert result.exit_code == 0, result.output
    return out


def test_options_before_a_subcommand_are_refused_not_ignored(model_dir):
    result = invoke("--model", "x", "--sparsity", "0.5", "plan", "--model", model_dir)
    assert result.exit_code == 2 and result.stdout == "", result.output
    assert result.stderr.startswith("error: --model, --sparsity before `plan` would be ignored")
    assert len(result.stderr.splitlines()) == 1
    assert invoke("-q", "--json", "plan", "--model", model_dir).exit_code == 0  # the output flags may go first


def test_run_is_the_main_job_with_the_very_same_options(model_dir, tmp_path):
    assert {p.name for p in run_command.params} == {p.name for p in main.params} - {"version"}
    summaries = []
    for verb in (["run"], []):
        result = invoke(*verb, "--model", model_dir, "--sparsity", "0.5", "--dry-run", "--json",
                        "--output-dir", tmp_path / f"out{len(verb)}", "--base-model-id", "test-org/tiny")
        assert result.exit_code == 0, result.output
        summaries.append(json.loads(result.stdout))
    keep = ("repo_id", "dry_run", "method", "target_sparsity", "actual_sparsity", "zero_params", "prunable_params")
    assert [{k: s[k] for k in keep} for s in summaries][0] == {k: summaries[1][k] for k in keep}
    assert invoke("run").exit_code == 0 and "Usage: main run [OPTIONS]" in invoke("run").stdout
    missing = invoke("run", "--model", model_dir)
    assert missing.exit_code == 2 and missing.stderr.startswith("error: missing --sparsity")


def test_every_command_takes_verbose_quiet_and_json():
    for path, command in commands():
        names = {p.name for p in command.params}
        assert {"verbose", "quiet", "json"} <= names, path


@pytest.mark.parametrize("where", ["before", "after"])
def test_json_results_before_or_after_the_command_name(where, model_dir, dry_run, tmp_path):
    cases = {
        ("plan",): ["--model", model_dir],
        ("card", "lint"): [dry_run / "README.md"],
        ("card", "render"): [dry_run / "results.json", "-o", tmp_path / "card.md"],
        ("bbq", "prepare"): ["--bbq-path", FIXTURES / "bbq", "--bbq-categories", "all", "--out", tmp_path / "bbq"],
    }
    for names, args in cases.items():
        argv = ["--json", *names, *args] if where == "before" else [*names, *args, "--json"]
        result = invoke(*argv)
        assert result.exit_code == 0, (names, result.output)
        data = json.loads(result.stdout)
        assert isinstance(data, dict) and "error" not in data, names
    assert json.loads(invoke("--json", "card", "lint", dry_run / "README.md").stdout)["ok"] is True


@pytest.mark.parametrize("argv", [
    ["run", "--model", "/no/such/model", "--sparsity", "0.5", "--dry-run"],
    ["--model", "/no/such/model", "--sparsity", "2", "--dry-run"],
    ["plan", "--model", "/no/such/model"],
    ["eval", "--model", "/no/such/model"],
    ["latency", "--model", "/no/such/folder"],  # click's own usage error
    ["bbq", "prepare", "--bbq-path", "/no/such/bbq", "--out", "x"],
    ["card", "render"],
    ["card", "lint", "/no/such/README.md"],
    ["card", "sync", "/no/such/run"],
    ["push", "/no/such/run"],
    ["release", "/no/such/release.yaml"],
    ["hub", "serve", "--port", "0"],  # no token in the environment
    ["run", "--model", "x", "--sparsity", "0.5", "--hub-endpoint", "http://user:hf_SECRETSECRET99@host:bad"],
])
def test_under_json_an_error_is_a_json_object_on_stderr(argv):
    for args in (["--json", *argv], [*argv, "--json"]):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        error = json.loads(result.stderr)  # in place of the `error:` line; stdout holds results only
        assert set(error) == {"error", "exit_code"} and error["exit_code"] == 2 and error["error"], args
        assert result.stdout == "" and "Traceback" not in result.output
        assert "SECRETSECRET" not in result.output


def test_verbose_after_the_command_name_shows_an_internal_error(dry_run, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr("publisher.card.lint.lint_card", broken)
    quiet = invoke("card", "lint", dry_run / "README.md")
    assert quiet.exit_code == 1 and "internal error: RuntimeError: a bug (run with -v" in quiet.stderr
    for argv in (["card", "lint", dry_run / "README.md", "-v"], ["-v", "card", "lint", dry_run / "README.md"]):
        loud = invoke(*argv)
        assert isinstance(loud.exception, RuntimeError), loud.output  # raised: the traceback is shown


def test_every_option_shows_its_env_var_named_by_the_rule():
    for path, command in commands():
        for param in command.params:
            if not isinstance(param, click.Option) or not param.envvar:
                continue
            assert param.show_envvar, (path, param.name)
            rule = "PUBLISH_PRUNED_" + max(param.opts, key=len).lstrip("-").replace("-", "_").upper()
            assert param.envvar in ENV_EXCEPTIONS or param.envvar == rule, (path, param.name, param.envvar)
    help_text = " ".join(invoke("run", "--help").stdout.split())  # unwrapped
    for envvar in ("PUBLISH_PRUNED_MODEL", "PUBLISH_PRUNED_REPO_ID", "PUBLISH_PRUNED_HUB_DIR",
                   "PUBLISH_PRUNED_TOKEN_FILE", "PUBLISH_PRUNED_CALIBRATION_DATASET", "PUBLISH_PRUNED_DEVICE",
                   "HF_ENDPOINT"):
        assert f"env var: {envvar}" in help_text, envvar
    for names in (("push",), ("release",), ("card", "sync")):
        assert "PUBLISH_PRUNED_TOKEN_FILE" in invoke(*names, "--help").stdout, names


def test_exit_codes_are_listed_in_help():
    for argv in ([], ["run"]):
        text = invoke(*argv, "--help").stdout
        assert "Exit codes" in text and f"{HUB_UNAVAILABLE}   the Hub or the network is unavailable" in text


@pytest.fixture
def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens there: connection refused


def test_an_unreachable_hub_is_exit_code_75_in_every_command(model_dir, dry_run, tmp_path, closed_port,
                                                             monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)  # the client's and our retries would wait ~40 s in all
    token = tmp_path / "token"
    token.write_text(HUB_WRITE_TOKEN)
    token.chmod(0o600)
    manifest = tmp_path / "release.yaml"
    manifest.write_text(yaml.safe_dump({"models": [str(model_dir)], "methods": ["magnitude"], "sparsities": [0.5]}))
    hub = ["--hub-endpoint", closed_port]
    runs = {
        "main": ["--model", model_dir, "--sparsity", "0.5", *hub, "--token-file", token, "--output-dir",
                 tmp_path / "o"],
        "run": ["run", "--model", model_dir, "--sparsity", "0.5", *hub, "--token-file", token],
        "push": ["push", dry_run, *hub, "--token-file", token],
        "card sync": ["card", "sync", dry_run, "--dry-run", *hub],
        "release": ["release", manifest, *hub, "--token-file", token],
        "plan": ["plan", "--model", "test-org/not-local", *hub],
    }
    for name, argv in runs.items():
        result = invoke(*argv)
        assert result.exit_code == HUB_UNAVAILABLE, (name, result.output)
        assert HUB_WRITE_TOKEN not in result.output
    error = json.loads(invoke("--json", *runs["push"]).stderr)
    assert error["exit_code"] == HUB_UNAVAILABLE and "cannot reach the Hub" in error["error"]

    # Hub data for the measurements: BBQ and perplexity rows from the Hub, through `datasets`
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", closed_port)
    bbq = invoke("bbq", "prepare", "--out", tmp_path / "bbq")
    assert bbq.exit_code == HUB_UNAVAILABLE, bbq.output
    evaluation = invoke("eval", "--model", model_dir, "--skip-eval", "srs,latency", "--ppl-samples", "1")
    assert evaluation.exit_code == HUB_UNAVAILABLE, evaluation.output


def test_a_hub_answering_503_is_exit_code_75_and_a_refusal_is_not(hub, dry_run, tmp_path, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda s: None)
    hub.faults.add(r"/api/whoami", kind="status", status=503, times=20)
    unavailable = invoke("push", dry_run, "--hub-endpoint", hub.url, env={"HF_TOKEN": HUB_WRITE_TOKEN})
    assert unavailable.exit_code == HUB_UNAVAILABLE, unavailable.output
    assert "unavailable" in unavailable.stderr and "rejected" not in unavailable.stderr
    hub.faults.clear()
    refused = invoke("push", dry_run, "--hub-endpoint", hub.url, env={"HF_TOKEN": "hf_not_a_known_token"})
    assert refused.exit_code == 2, refused.output


def test_one_way_to_start_the_emulator(tmp_path):
    """`python -m publisher.emulator` is `publish-pruned hub serve`: same options, defaults and token variable."""
    served = main.commands["hub"].commands["serve"]
    assert served is serve_command
    defaults = {p.name: p.default for p in serve_command.params}
    assert defaults["root"] == Path("local-hub") and defaults["port"] == 8000 and defaults["token_env"] == "HF_TOKEN"
    env = {**os.environ, "HF_TOKEN": "hf_local_secret", "PYTHONPATH": str(ROOT)}
    help_text = subprocess.run([sys.executable, "-m", "publisher.emulator", "--help"], env=env, capture_output=True,
                               text=True, check=True).stdout
    same = invoke("hub", "serve", "--help").stdout.replace("main hub serve", "python -m publisher.emulator")
    assert "".join(help_text.split()) == "".join(same.split())  # the same text, wrapped to another width
    proc = subprocess.Popen([sys.executable, "-m", "publisher.emulator", "--root", str(tmp_path / "hub"), "--port", "0",
                             "--json"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]  # one JSON object, indented
        started = json.loads("".join(lines))
        assert started["url"].startswith("http://127.0.0.1:") and started["user"] == "local-user"
        from huggingface_hub import HfApi

        assert HfApi(endpoint=started["url"], token="hf_local_secret").whoami()["name"] == "local-user"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
