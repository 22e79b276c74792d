"""Cards keep working when their line endings change (a Windows editor, a web edit): the front matter is split
as the Hub splits it (huggingface_hub's RepoCard), for lint, card sync's ownership check and the preview.
(CR-only line endings are not tested: the Hub's own front-matter regex does not accept them either.)"""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import HUB_USER
from huggingface_hub.repocard import RepoCard
from test_hub_helpers import FAST, api_for

from publisher.card import CardSettings, render_card
from publisher.card.lint import lint_card
from publisher.card.preview import render_preview
from publisher.cli import main
from publisher.errors import CardError
from publisher.front_matter import card_metadata, split_card
from publisher.hub.card_sync import sync_cards
from publisher.hub.remote import RemoteState, is_publish_pruned_card
from publisher.results import read_results

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "results" / "tiny-chat-s50.json"


@pytest.fixture(scope="module")
def rendered():
    """(results, the card the tool renders for them, with LF line endings)."""
    results = read_results(FIXTURE)
    text, _ = render_card(results, CardSettings())
    assert "\r" not in text
    return results, text


def test_a_rendered_card_with_crlf_line_endings_passes_lint(rendered):
    results, text = rendered
    lint_card(text, results)
    lint_card(text.replace("\n", "\r\n"), results)  # figures against results.json included


def test_card_lint_accepts_a_crlf_file(rendered, tmp_path):
    results, text = rendered
    card = tmp_path / "README.md"
    card.write_bytes(text.replace("\n", "\r\n").encode())
    result = CliRunner().invoke(main, ["card", "lint", str(card), "--results", str(FIXTURE)])
    assert result.exit_code == 0 and "figures match" in result.stdout, result.output


def test_card_sync_recognises_its_own_crlf_card_and_base_model(rendered):
    results, text = rendered
    converted = text.replace("\n", "\r\n")
    assert is_publish_pruned_card(text) and is_publish_pruned_card(converted)
    assert RemoteState("a/b", "main", card=converted).base_model == results.source.base_model_id == "test-org/tiny-chat"


def test_the_front_matter_of_a_crlf_card_round_trips(rendered):
    _, text = rendered
    converted = text.replace("\n", "\r\n")
    expected = yaml.safe_load(text.split("\n---\n", 1)[0].removeprefix("---\n"))
    meta, body = split_card(converted)
    assert meta == card_metadata(text) == expected and "research-only" in meta["tags"]
    assert body.replace("\r\n", "\n") == split_card(text)[1]
    assert str(RepoCard(converted)) == converted  # written back byte for byte, line endings kept


def test_the_preview_shows_a_crlf_front_matter_as_metadata(rendered):
    _, text = rendered
    html = render_preview(text.replace("\n", "\r\n"))
    assert "<dt>base_model</dt><dd>test-org/tiny-chat</dd>" in html and "base_model:" not in html


@pytest.mark.parametrize(("text", "problem"), [
    ("# no front matter\n", "has no YAML front matter"),
    ("---\r\nlicense: [unclosed\r\n---\r\nbody\r\n", "not valid YAML"),
    ("---\r\n- a list\r\n---\r\nbody\r\n", "must be a YAML mapping"),
])
def test_unusable_front_matter_is_named(text, problem):
    with pytest.raises(CardError, match=problem):
        split_card(text)
    assert card_metadata(text) == {}


def test_card_sync_updates_a_hub_card_that_was_saved_with_crlf(hub, rendered):
    """Not refused as foreign: the Hub's copy is the tool's card with Windows line endings."""
    _, text = rendered
    api, repo = api_for(hub), f"{HUB_USER}/tiny-chat-magnitude-s50"
    api.create_repo(repo)
    api.upload_file(path_or_fileobj=text.replace("\n", "\r\n").encode(), path_in_repo="README.md", repo_id=repo)
    [sync] = sync_cards(api, [(repo, text + "\nA new caveat.\n")], dry_run=False, policy=FAST)
    assert sync.status == "updated", sync.error
