"""preview.html renders in a real browser: headless Chromium (Debian's `chromium`), skipped where absent."""

import shutil
import subprocess

import pytest
from click.testing import CliRunner
from tiny_models import save_tiny_model

from publisher.card.preview import render_preview
from publisher.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_preview_shows_front_matter_as_metadata_and_tables_as_html():
    card = ("---\nlicense: mit\ntags:\n- research-only\n---\n# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
            "![p](plots/x.png)\n")
    html = render_preview(card)
    assert "<dt>license</dt><dd>mit</dd>" in html and "<dd>research-only</dd>" in html
    assert "<table>" in html and "<td>1</td>" in html and '<img src="plots/x.png"' in html


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_dry_run_preview_renders_in_headless_chromium(tmp_path):
    model = save_tiny_model("llama", tmp_path / "base", readme="---\nlicense: mit\n---\n")
    out = tmp_path / "run"
    assert CliRunner().invoke(main, ["--model", str(model), "--sparsity", "0.5", "--dry-run", "-q",
                                     "--output-dir", str(out), "--base-model-id", "test-org/tiny"]).exit_code == 0
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
         "--dump-dom", (out / "preview.html").as_uri()],
        capture_output=True, text=True, timeout=60, check=True).stdout
    assert "Research use only" in dom and "<table>" in dom
    assert "research-only" in dom and 'src="plots/layer_sparsity.png"' in dom
