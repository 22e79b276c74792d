"""card sync: a diff per repo in a dry run, card-only commits otherwise, never over a foreign or moved card."""

from __future__ import annotations

import threading

import pytest
from conftest import HUB_USER
from huggingface_hub import CommitOperationAdd
from test_hub_helpers import FAST, api_for, changed_in, commits, pruned_run

from publisher.errors import PublishError
from publisher.hub.card_sync import SYNC_MESSAGE, load_card_items, sync_cards
from publisher.hub.publish import PushOptions, publish_run

REPO = f"{HUB_USER}/tiny-magnitude-s50"


@pytest.fixture
def published(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run", repo_id=REPO)
    publish_run(api_for(hub), REPO, run.output_dir, run.files, private=False, message="Publish",
                options=PushOptions(retry=FAST, verify_sparsity=False))
    return run


def edited_card(run, line="\nA new caveat.\n"):
    card = run.output_dir / "README.md"
    card.write_text(card.read_text() + line)
    return card.read_text()


def test_dry_run_shows_a_unified_diff_and_commits_nothing(hub, published):
    text = edited_card(published)
    before = commits(hub, REPO)
    [sync] = sync_cards(api_for(hub), [(REPO, text)], dry_run=True, policy=FAST)
    assert sync.status == "would-update" and sync.commit is None
    assert sync.diff.startswith(f"--- hub:{REPO}/README.md\n+++ local:{REPO}/README.md\n")
    assert "+A new caveat.\n" in sync.diff and "\n-" not in sync.diff
    assert commits(hub, REPO) == before


def test_sync_commits_the_card_only_then_reports_unchanged(hub, published):
    items = load_card_items([published.output_dir])
    assert items[0][0] == REPO
    text = edited_card(published)
    [sync] = sync_cards(api_for(hub), [(REPO, text)], dry_run=False, policy=FAST)
    assert sync.status == "updated" and sync.commit == commits(hub, REPO)[0]
    assert changed_in(hub, REPO, sync.commit) == {"README.md": "modified"}
    assert api_for(hub).list_repo_commits(REPO)[0].title == SYNC_MESSAGE
    [again] = sync_cards(api_for(hub), [(REPO, text)], dry_run=False, policy=FAST)
    assert again.status == "unchanged" and again.diff == "" and again.commit == sync.commit


def test_foreign_cards_missing_repos_and_moved_cards_are_errors_per_repo(hub, published, tmp_path):
    api = api_for(hub)
    foreign = f"{HUB_USER}/foreign"
    api.create_repo(foreign)
    api.upload_file(path_or_fileobj=b"# not ours\n", path_in_repo="README.md", repo_id=foreign)
    text = edited_card(published)
    results = sync_cards(api, [(foreign, text), (f"{HUB_USER}/missing", text), (REPO, text)], dry_run=False,
                         policy=FAST)
    assert [r.status for r in results] == ["error", "error", "updated"]
    assert "not written by publish-pruned" in results[0].error and "does not exist" in results[1].error
    [forced] = sync_cards(api, [(foreign, text)], dry_run=False, force=True, policy=FAST)
    assert forced.status == "updated"

    held = hub.faults.add(r"/commit/main$", kind="delay", delay_s=30)
    newer = edited_card(published, "\nnewer\n")
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(sync_cards(api, [(REPO, newer)], dry_run=False,
                                                                   policy=FAST)))
    thread.start()
    assert held.wait_fired(30)
    theirs = api.create_commit(REPO, [CommitOperationAdd("README.md", b"---\n---\nedited on the Hub\n")],
                               commit_message="web edit")
    held.release()
    thread.join(30)
    assert out[0].status == "error" and "changed after the diff" in out[0].error
    assert commits(hub, REPO)[0] == theirs.oid


def test_load_card_items_needs_finished_runs(tmp_path):
    with pytest.raises(PublishError, match="not a finished run folder"):
        load_card_items([tmp_path])
