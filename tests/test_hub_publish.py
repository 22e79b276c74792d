"""publish_run against the emulator: idempotence, card-only commits, ownership checks, options, verification."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import pytest
from conftest import HUB_USER
from huggingface_hub import CommitOperationAdd
from test_hub_helpers import FAST, api_for, changed_in, commits, lfs_puts, pruned_run

from publisher.errors import PublishError
from publisher.hub.publish import PushOptions, publish_run
from publisher.hub.remote import CARD_MARKER, RESEARCH_ONLY_TAG, is_publish_pruned_card
from publisher.model_io import digest_files

REPO = f"{HUB_USER}/tiny-magnitude-s50"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def push(hub, run, repo_id=REPO, **options):
    private = options.pop("private", False)
    return publish_run(api_for(hub), repo_id, run.output_dir, run.files, private=private, message="Publish s50",
                       description="test push", results=run.results, options=PushOptions(retry=FAST, **options))


def refresh(run):
    """The run's file digests after a local edit (what load_run would compute)."""
    return dataclasses.replace(run, files={**run.files, **digest_files(run.output_dir, list(run.files))})


def test_research_only_tag_matches_the_card_renderer():
    from publisher.card.render import RESEARCH_ONLY_TAG as RENDERED

    assert RESEARCH_ONLY_TAG == RENDERED


def test_first_push_commits_everything_and_re_measures_sparsity(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    record = push(hub, run)
    assert record.changed and record.created_repo and record.verified_files == len(run.files)
    assert set(record.committed) == set(run.files) and record.deleted == []
    assert set(changed_in(hub, REPO, record.commit)) == set(run.files)
    check = record.sparsity_check
    assert check["shard"] == "model.safetensors" and check["layers"] == len(run.results.sparsity.layers)
    assert check["zeros"] == run.results.sparsity.zero_params
    message = api_for(hub).list_repo_commits(REPO)[0]
    assert message.title == "Publish s50" and "Uploads" in message.message and "model.safetensors" in message.message


def test_same_run_again_makes_no_commit_and_uploads_nothing(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    first = push(hub, run)
    mark = len(hub.requests)
    again = push(hub, run)
    assert not again.changed and again.commit == first.commit and again.committed == []
    assert commits(hub, REPO) == commits(hub, REPO)[:2] and len(commits(hub, REPO)) == 2
    assert lfs_puts(hub, mark) == [] and not any(r.path.endswith("/commit/main") for r in hub.requests[mark:])


def test_only_the_card_is_committed_when_only_the_card_changed(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    push(hub, run)
    card = run.output_dir / "README.md"
    card.write_text(card.read_text() + "\nA corrected caveat.\n")
    mark = len(hub.requests)
    record = push(hub, refresh(run))
    assert record.changed and record.committed == ["README.md"]
    assert changed_in(hub, REPO, record.commit) == {"README.md": "modified"}
    assert lfs_puts(hub, mark) == []  # no weight bytes travelled


def test_stale_files_of_the_previous_run_are_removed_but_foreign_ones_kept(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    push(hub, run)
    api_for(hub).upload_file(path_or_fileobj=b"my notes", path_in_repo="notes.txt", repo_id=REPO)
    files = {k: v for k, v in run.files.items() if k != "plots/layer_sparsity.png"}
    record = publish_run(api_for(hub), REPO, run.output_dir, files, private=False, message="Publish again",
                         results=run.results, options=PushOptions(retry=FAST))
    assert record.deleted == ["plots/layer_sparsity.png"] and record.committed == []
    assert changed_in(hub, REPO, record.commit) == {"plots/layer_sparsity.png": "deleted"}
    assert "notes.txt" in api_for(hub).list_repo_files(REPO)


def test_a_foreign_card_or_files_are_not_overwritten_without_force(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    api = api_for(hub)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# Someone's model\n", path_in_repo="README.md",
                    repo_id=REPO)
    before = commits(hub, REPO)
    with pytest.raises(PublishError, match="not written by publish-pruned"):
        push(hub, run)
    assert commits(hub, REPO) == before and api.repo_exists(REPO)
    assert push(hub, run, force=True).changed

    other = f"{HUB_USER}/just-files"
    api.create_repo(other)
    api.upload_file(path_or_fileobj=b"\0weights", path_in_repo="w.bin", repo_id=other)
    with pytest.raises(PublishError, match="no README.md written by publish-pruned"):
        push(hub, run, repo_id=other)


def test_a_repo_holding_another_base_model_is_refused(hub, tmp_path_factory, tmp_path):
    push(hub, pruned_run(tmp_path_factory, tmp_path / "a"))
    other = pruned_run(tmp_path_factory, tmp_path / "b", base_model_id="test-org/other")
    head = commits(hub, REPO)[0]
    with pytest.raises(PublishError, match="base model test-org/tiny, this run prunes test-org/other"):
        push(hub, other)
    assert commits(hub, REPO)[0] == head


def test_marker_detection():
    card = f"---\ntags:\n- {RESEARCH_ONLY_TAG}\n---\n{CARD_MARKER}\n# x\n"
    assert is_publish_pruned_card(card)
    assert not is_publish_pruned_card(card.replace(CARD_MARKER, ""))
    assert not is_publish_pruned_card(card.replace(RESEARCH_ONLY_TAG, "other"))


def test_a_tampered_sparsity_record_fails_verification(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    layers = list(run.results.sparsity.layers)
    layers[0] = dataclasses.replace(layers[0], zeros=layers[0].zeros + 1)
    results = dataclasses.replace(run.results, sparsity=dataclasses.replace(run.results.sparsity, layers=layers))
    with pytest.raises(PublishError, match=f"{layers[0].name}: {layers[0].zeros - 1}/"):
        publish_run(api_for(hub), REPO, run.output_dir, run.files, private=False, message="m", results=results,
                    options=PushOptions(retry=FAST))


def test_branch_tag_gated_private_and_collection_are_applied_once(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    options = {"branch": "pruned/v1", "tag": "release/s50", "gated": "manual", "collection": "Pruned tiny models",
               "private": True}
    record = push(hub, run, **options)
    api = api_for(hub)
    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches}["pruned/v1"] == record.commit
    assert [(t.name, t.target_commit) for t in refs.tags] == [("release/s50", record.commit)]
    assert record.revision == "pruned/v1" and "model.safetensors" not in api.list_repo_files(REPO)  # main untouched
    info = api.model_info(REPO)
    assert info.gated == "manual" and info.private is True
    collection = api.get_collection(record.collection)
    assert collection.title == "Pruned tiny models" and [i.item_id for i in collection.items] == [REPO]

    again = push(hub, run, **options)
    assert not again.changed and again.collection == record.collection
    assert [i.item_id for i in api.get_collection(record.collection).items] == [REPO]
    assert len(list(api.list_collections(owner=HUB_USER))) == 1

    card = run.output_dir / "README.md"
    card.write_text(card.read_text() + "\nv2\n")
    with pytest.raises(PublishError, match="tag 'release/s50'"):
        push(hub, refresh(run), **options)
    moved = push(hub, refresh(run), **options, force=True)
    assert [(t.name, t.target_commit) for t in api.list_repo_refs(REPO).tags] == [("release/s50", moved.commit)]


def test_create_pr_proposes_once_and_leaves_main_alone(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    main_head = push(hub, run).commit
    card = run.output_dir / "README.md"
    card.write_text(card.read_text() + "\nProposed change.\n")
    record = push(hub, refresh(run), create_pr=True)
    assert record.changed and record.revision == "refs/pr/1" and record.pr_url.endswith("/discussions/1")
    assert commits(hub, REPO)[0] == main_head
    assert changed_in(hub, REPO, record.commit) == {"README.md": "modified"}
    again = push(hub, refresh(run), create_pr=True)
    assert not again.changed and again.revision == "refs/pr/1" and again.commit == record.commit
    assert [p.ref for p in api_for(hub).list_repo_refs(REPO, include_pull_requests=True).pull_requests] == \
        ["refs/pr/1"]


def test_a_concurrent_push_fails_cleanly_instead_of_overwriting(hub, tmp_path_factory, tmp_path):
    """Push A reads the head, then is held at its commit; push B commits; A gets 412 and changes nothing."""
    run_a = pruned_run(tmp_path_factory, tmp_path / "a")
    run_b = pruned_run(tmp_path_factory, tmp_path / "b")
    (run_b.output_dir / "README.md").write_text((run_b.output_dir / "README.md").read_text() + "\nB\n")
    run_b = refresh(run_b)
    held = hub.faults.add(r"/commit/main$", kind="delay", delay_s=30)
    outcome: dict = {}

    def push_a():
        try:
            outcome["a"] = push(hub, run_a)
        except PublishError as exc:
            outcome["a"] = exc

    thread = threading.Thread(target=push_a)
    thread.start()
    assert held.wait_fired(30)
    record_b = push(hub, run_b)
    held.release()
    thread.join(30)
    assert isinstance(outcome["a"], PublishError) and "changed while uploading" in str(outcome["a"])
    assert commits(hub, REPO)[0] == record_b.commit and len(commits(hub, REPO)) == 2
    card = api_for(hub).hf_hub_download(REPO, "README.md", cache_dir=tmp_path / "cache")
    assert Path(card).read_text().endswith("\nB\n")  # A's failure did not delete the repo B just published into


def test_parent_commit_guards_even_a_plain_commit_in_between(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    push(hub, run)
    held = hub.faults.add(r"/commit/main$", kind="delay", delay_s=30)
    card = run.output_dir / "README.md"
    card.write_text(card.read_text() + "\nmine\n")
    errors: list = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(PublishError, push, hub, refresh(run))))
    thread.start()
    assert held.wait_fired(30)
    theirs = api_for(hub).create_commit(REPO, [CommitOperationAdd("notes.txt", b"theirs")], commit_message="x")
    held.release()
    thread.join(30)
    assert errors and commits(hub, REPO)[0] == theirs.oid


def test_a_failure_after_the_commit_says_so_and_a_re_run_finishes_the_job(hub, tmp_path_factory, tmp_path):
    run = pruned_run(tmp_path_factory, tmp_path / "run")
    hub.faults.add(r"^/api/collections/.+/items$", kind="drop", times=3)  # more drops than FAST retries
    with pytest.raises(PublishError, match=r"was published at [0-9a-f]{12}, but the Hub stopped answering"):
        push(hub, run, collection="Pruned")
    head = commits(hub, REPO)[0]
    again = push(hub, run, collection="Pruned")
    assert not again.changed and again.commit == head
    assert [i.item_id for i in api_for(hub).get_collection(again.collection).items] == [REPO]
