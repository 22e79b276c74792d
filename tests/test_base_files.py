"""What a Hub base model carries besides weights reaches the published repo: chat templates, model code,
license terms and the base's gate, through the real client against the emulator."""

from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub.constants
import pytest
from click.testing import CliRunner
from conftest import HUB_WRITE_TOKEN
from huggingface_hub import HfApi, ModelCard, snapshot_download
from tiny_models import add_remote_code, save_tiny_model
from transformers import AutoTokenizer

from publisher.base_files import hub_ignore_patterns, is_license_file
from publisher.cli import main
from publisher.emulator import HubEmulator

OWNER = "test-org"
TEMPLATE = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
TOOL_TEMPLATE = "{% for m in messages %}[tool]{{ m.content }}{% endfor %}"


@pytest.fixture
def hub_org(tmp_path, monkeypatch):
    """An emulator where the write token's owner is 'test-org' (hosting bases and the pruned repos); no other
    token or Hub cache in reach."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    with HubEmulator(root=tmp_path / "hub", tokens={HUB_WRITE_TOKEN: (OWNER, "write")}) as emulator:
        yield emulator


def api(hub) -> HfApi:
    return HfApi(endpoint=hub.url, token=HUB_WRITE_TOKEN)


def upload(hub, folder: Path, repo_id: str) -> None:
    api(hub).create_repo(repo_id)
    api(hub).upload_folder(repo_id=repo_id, folder_path=folder)


def run_cli(hub, model: str, out: Path, *extra: str):
    return CliRunner(env={"HF_TOKEN": HUB_WRITE_TOKEN}).invoke(main, [
        "--model", model, "--sparsity", "0.5", "--hub-endpoint", hub.url, "--output-dir", str(out), "--json",
        "-q", *extra])


def download(hub, repo_id: str, tmp_path: Path) -> Path:
    return Path(snapshot_download(repo_id, endpoint=hub.url, token=HUB_WRITE_TOKEN, cache_dir=tmp_path / "dl"))


def chat_base(folder: Path, *, streamable: bool) -> Path:
    """A tiny Llama whose chat template lives only in chat_template.jinja (+ a named one), as many current models
    ship it. Without generation_config.json the prune stage loads the model instead of streaming it."""
    save_tiny_model("llama", folder, readme="---\nlicense: mit\n---\n# tiny chat\n")
    assert "chat_template" not in json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "chat_template.jinja").write_text(TEMPLATE)
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "tool_use.jinja").write_text(TOOL_TEMPLATE)
    if not streamable:
        (folder / "generation_config.json").unlink()
    return folder


@pytest.mark.parametrize("path", ["streamed", "loaded"])
def test_chat_templates_of_a_hub_base_are_fetched_and_published(hub_org, tmp_path, path):
    upload(hub_org, chat_base(tmp_path / "base", streamable=path == "streamed"), f"{OWNER}/tiny-chat")
    out = tmp_path / "run"
    result = run_cli(hub_org, f"{OWNER}/tiny-chat", out)
    assert result.exit_code == 0, result.output
    assert (out / "chat_template.jinja").read_text() == TEMPLATE
    assert (out / "additional_chat_templates" / "tool_use.jinja").read_text() == TOOL_TEMPLATE
    results = json.loads((out / "results.json").read_text())
    assert ("streamed" in results["environment"]["placement"]) == (path == "streamed")
    assert {"chat_template.jinja", "additional_chat_templates/tool_use.jinja"} <= set(results["files"])
    published = download(hub_org, json.loads(result.stdout)["repo_id"], tmp_path)
    assert (published / "additional_chat_templates" / "tool_use.jinja").is_file()
    tokenizer = AutoTokenizer.from_pretrained(published)
    assert tokenizer.chat_template == {"default": TEMPLATE, "tool_use": TOOL_TEMPLATE}
    text = tokenizer.apply_chat_template([{"role": "user", "content": "w1 w2"}], tokenize=False)
    assert text == "<user>w1 w2"


def test_a_remote_code_hub_base_loads_from_its_snapshot_and_publishes_its_code(hub_org, tmp_path):
    base = add_remote_code(save_tiny_model("llama", tmp_path / "base"))
    (base / "my_tools.py").write_text("HELP = 'used by the authors, not by the model classes'\n")
    upload(hub_org, base, f"{OWNER}/tiny-code")
    out = tmp_path / "run"
    result = run_cli(hub_org, f"{OWNER}/tiny-code", out, "--trust-remote-code")
    assert result.exit_code == 0, result.output
    published = download(hub_org, json.loads(result.stdout)["repo_id"], tmp_path)
    assert {"configuration_my.py", "modeling_my.py", "my_tools.py"} <= {p.name for p in published.iterdir()}


GATED_CARD = """---
license: llama3.2
extra_gated_heading: Tiny Llama terms
extra_gated_prompt: You agree to pass these terms on to anyone you share the model with.
extra_gated_fields:
  Affiliation: text
  I accept the terms: checkbox
extra_gated_button_content: Submit
---
# tiny gated
"""


def test_license_terms_and_gate_of_a_gated_hub_base_are_passed_on(hub_org, tmp_path):
    base = save_tiny_model("llama", tmp_path / "base", readme=GATED_CARD)
    terms = {"LICENSE.txt": "TINY LLAMA COMMUNITY LICENSE\n", "USE_POLICY.md": "# Acceptable use\n",
             "NOTICE": "Tiny Llama is licensed under the Tiny Llama License.\n"}
    for name, text in terms.items():
        (base / name).write_text(text)
    upload(hub_org, base, f"{OWNER}/tiny-gated")
    api(hub_org).update_repo_settings(f"{OWNER}/tiny-gated", gated="manual")
    assert api(hub_org).model_info(f"{OWNER}/tiny-gated").gated == "manual"  # the emulator answers like the Hub

    out = tmp_path / "run"
    result = run_cli(hub_org, f"{OWNER}/tiny-gated", out)
    assert result.exit_code == 0, result.output
    assert "warning: the base model test-org/tiny-gated is gated (manual)" in result.stderr
    repo_id = json.loads(result.stdout)["repo_id"]
    assert api(hub_org).model_info(repo_id).gated == "manual"
    results = json.loads((out / "results.json").read_text())
    assert results["source"]["license_files"] == sorted(terms) and results["source"]["gated"] == "manual"
    assert results["settings"]["gated"] == "manual" and results["settings"]["gated_from_base"] is True
    published = download(hub_org, repo_id, tmp_path)
    assert {name: (published / name).read_text() for name in terms} == terms
    card = ModelCard.load(published / "README.md").data.to_dict()
    assert card["extra_gated_prompt"].startswith("You agree to pass these terms on")
    assert card["extra_gated_fields"] == {"Affiliation": "text", "I accept the terms": "checkbox"}
    assert card["extra_gated_heading"] == "Tiny Llama terms" and card["extra_gated_button_content"] == "Submit"

    chosen = run_cli(hub_org, f"{OWNER}/tiny-gated", tmp_path / "run-auto", "--gated", "auto", "--repo-id",
                     f"{OWNER}/tiny-gated-auto")
    assert chosen.exit_code == 0, chosen.output
    assert "gated" not in chosen.stderr and api(hub_org).model_info(f"{OWNER}/tiny-gated-auto").gated == "auto"


def test_a_local_copy_of_a_gated_model_passes_its_card_terms_on_and_asks_for_a_gate(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    base = save_tiny_model("llama", tmp_path / "base", readme=GATED_CARD)
    (base / "LICENSE").write_text("TINY LLAMA COMMUNITY LICENSE\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["--model", str(base), "--sparsity", "0.5", "--dry-run", "-q",
                                       "--base-model-id", "test-org/tiny-gated", "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert "warning: the card of test-org/tiny-gated asks users to accept terms" in result.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["source"]["license_files"] == ["LICENSE"] and results["settings"]["gated"] is None
    assert (out / "LICENSE").is_file() and "LICENSE" in results["files"]
    card = ModelCard.load(out / "README.md").data.to_dict()
    assert card["extra_gated_fields"] == {"Affiliation": "text", "I accept the terms": "checkbox"}


def test_the_download_ignores_other_formats_and_pickles_unless_trusted():
    from huggingface_hub.utils import filter_repo_objects

    names = ["model.safetensors", "config.json", "chat_template.jinja", "additional_chat_templates/tool.jinja",
             "modeling_x.py", "tokenizer.model", "LICENSE", "USE_POLICY.md", "pytorch_model.bin", "model.gguf",
             "onnx/model.onnx", "flax_model.msgpack", "tf_model.h5", "model.tflite", "rust_model.ot",
             "original/consolidated.00.pth", "consolidated.safetensors", "training_args.pt"]
    kept = list(filter_repo_objects(names, ignore_patterns=hub_ignore_patterns(trust_pickled=False)))
    assert kept == names[:8]
    trusted = list(filter_repo_objects(names, ignore_patterns=hub_ignore_patterns(trust_pickled=True)))
    assert trusted == names[:9]
    assert all(map(is_license_file, ["LICENSE", "license.md", "LICENSE-MODEL", "Notice.txt", "USE_POLICY.md"]))
    assert not any(map(is_license_file, ["README.md", "license_check.py.bak/x", "licenses.json", "sub/LICENSE"]))
