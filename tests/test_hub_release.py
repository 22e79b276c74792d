"""release: the grid of a manifest, its deterministic shards, skipping what the Hub already holds, the summary."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml
from conftest import HUB_USER
from test_hub_helpers import FAST, api_for, pruned_run

from publisher.errors import PublishError, SettingsError
from publisher.hashing import sha256_file
from publisher.hub.publish import PushOptions, publish_run
from publisher.release import (
    Artifact,
    _published_identity,
    load_manifest,
    parse_manifest,
    published_commit,
    run_release,
    select_shard,
    summary_lines,
    write_summary,
)

MANIFEST = {
    "suffix": "r1",
    "defaults": {"seed": 7},
    "push": {"tag": "v1", "gated": "manual", "private": True},
    "models": ["org/a", {"model": "./b.gguf", "base_model_id": "org/b", "dtype": "bfloat16"}],
    "methods": ["magnitude", "random"],
    "sparsities": [0.3, 0.5, 0.7],
}


def test_grid_is_model_major_and_carries_settings(tmp_path):
    path = tmp_path / "release.yaml"
    path.write_text(yaml.safe_dump(MANIFEST))
    manifest = load_manifest(path)
    grid = manifest.artifacts()
    assert len(grid) == 12 and [a.model for a in grid] == ["org/a"] * 6 + ["./b.gguf"] * 6
    assert [a.key for a in grid[:3]] == ["org/a:magnitude:s30", "org/a:magnitude:s50", "org/a:magnitude:s70"]
    b = grid[6].settings()
    assert (b.seed, b.dtype, b.base_model_id, b.method, b.sparsity) == (7, "bfloat16", "org/b", "magnitude", 0.3)
    assert grid[0].repo_id("lab") == "lab/a-magnitude-s30-r1" and grid[6].repo_id("lab") == "lab/b-magnitude-s30-r1"
    options, private = manifest.push_options()
    assert options == PushOptions(tag="v1", gated="manual") and private is True


@pytest.mark.parametrize("n", [1, 2, 3, 5, 12, 13])
def test_shards_partition_the_grid_deterministically(n):
    grid = parse_manifest(MANIFEST).artifacts()
    shards = [select_shard(grid, f"{i}/{n}") for i in range(1, n + 1)]
    assert [a for shard in shards for a in shard] == grid  # every artifact once, order kept
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shards == [select_shard(parse_manifest(MANIFEST).artifacts(), f"{i}/{n}") for i in range(1, n + 1)]


@pytest.mark.parametrize(("change", "message"), [
    ({"sparsities": [1.5]}, "strictly between 0 and 1"),
    ({"methods": []}, "'methods' must be a non-empty list"),
    ({"models": [{"model": "x", "colour": "red"}]}, "unknown keys colour"),
    ({"extra": 1}, "unknown keys extra"),
    ({"push": {"tags": "v1"}}, "'push' takes"),
    ({"sparsities": [0.5, 0.5]}, "twice"),
])
def test_bad_manifests_are_refused_before_any_work(change, message):
    with pytest.raises(SettingsError, match=message):
        parse_manifest({**MANIFEST, **change})
    with pytest.raises(SettingsError, match="need 1 <= i <= n"):
        select_shard([], "5/4")
    with pytest.raises(SettingsError, match="must look like 2/4"):
        select_shard([], "half")


def test_run_release_skips_published_records_failures_and_writes_a_summary(tmp_path):
    grid = parse_manifest({**MANIFEST, "models": ["org/a"], "methods": ["magnitude"]}).artifacts()
    ran: list[str] = []

    def run_one(artifact: Artifact):
        ran.append(artifact.key)
        if artifact.sparsity == 0.5:
            raise PublishError("upload failed")
        publish = SimpleNamespace(commit="c" * 40, url="http://hub/x", changed=artifact.sparsity == 0.7)
        return SimpleNamespace(repo_id=artifact.repo_id("lab"), publish=publish)

    def published(artifact: Artifact):
        return (artifact.repo_id("lab"), "d" * 40) if artifact.sparsity == 0.3 else None

    summary = run_release(grid, run_one, published=published, shard="1/1")
    assert ran == ["org/a:magnitude:s50", "org/a:magnitude:s70"]
    assert [a.status for a in summary.artifacts] == ["skipped", "failed", "published"]
    assert summary.artifacts[1].error == "upload failed" and not summary.ok
    assert summary.counts() == {"skipped": 1, "failed": 1, "published": 1}
    write_summary(tmp_path / "out" / "summary.json", summary)
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["ok"] is False and data["shard"] == "1/1" and data["artifacts"][0]["commit"] == "d" * 40
    assert summary_lines(summary)[-1] == "release: 1 failed, 1 published, 1 skipped"

    dry = run_release(grid[:1], lambda a: SimpleNamespace(repo_id="lab/x", publish=None))
    assert dry.artifacts[0].status == "dry-run" and dry.ok
    stop = run_release(grid, run_one, keep_going=False)
    assert [a.status for a in stop.artifacts] == ["unchanged", "failed"]  # stops after the failure


def test_published_commit_recognises_identical_content_only(hub, tmp_path_factory, tmp_path):
    repo_id = f"{HUB_USER}/tiny-magnitude-s50"
    run = pruned_run(tmp_path_factory, tmp_path / "run", repo_id=repo_id)
    settings = run.results.settings
    artifact = Artifact(settings["model"], "magnitude", 0.5, (("base_model_id", "test-org/tiny"),))
    api = api_for(hub)
    assert published_commit(api, repo_id, artifact) is None  # no repo yet
    record = publish_run(api, repo_id, run.output_dir, run.files, private=False, message="Publish",
                         options=PushOptions(retry=FAST, verify_sparsity=False))
    assert published_commit(api, repo_id, artifact) == record.commit
    assert published_commit(api, repo_id, Artifact(settings["model"], "magnitude", 0.3)) is None
    as_2_4 = Artifact(settings["model"], "magnitude", 0.5, (("base_model_id", "test-org/tiny"), ("structure", "2:4")))
    assert published_commit(api, repo_id, as_2_4) is None  # another structure is another artifact
    assert published_commit(api, repo_id, artifact, tool_version="99.0") is None
    config = (run.output_dir / "config.json").read_bytes()
    edited = config.replace(b'"', b"'", 1)  # same size, other bytes: a small non-LFS file is read, not sized
    assert len(edited) == len(config) and edited != config
    api.upload_file(path_or_fileobj=edited, path_in_repo="config.json", repo_id=repo_id)
    assert published_commit(api, repo_id, artifact) is None
    api.upload_file(path_or_fileobj=config, path_in_repo="config.json", repo_id=repo_id)
    assert published_commit(api, repo_id, artifact) is not None
    results = json.loads((run.output_dir / "results.json").read_text())
    results["pruning"]["calibration"] = {"dataset": "allenai/c4", "revision": "c4-commit-1"}
    api.upload_file(path_or_fileobj=json.dumps(results).encode(), path_in_repo="results.json", repo_id=repo_id)
    asked = []
    moved = lambda used: asked.append(used) or True  # noqa: E731 - the dataset holds other data since
    assert published_commit(api, repo_id, artifact, calibration_moved=moved) is None and asked == ["c4-commit-1"]
    assert published_commit(api, repo_id, artifact, calibration_moved=lambda used: False) is not None
    api.delete_file("model.safetensors", repo_id)  # incomplete on the Hub: publish again
    assert published_commit(api, repo_id, artifact) is None


def test_identity_covers_structure_and_what_a_calibrated_method_read(tmp_path):
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "w1 w2 w3"}\n')
    extra = (("calibration_dataset", str(calib)), ("calibration_samples", 8))
    wanda = Artifact("org/a", "wanda", 0.5, extra)
    identity = wanda.identity()
    assert identity["structure"] == "unstructured" and identity["calibration_samples"] == 8
    assert identity["calibration_file_sha256"] == sha256_file(calib)
    # what a run of it writes into results.json reads back as the same identity
    calibration = {"file_sha256": sha256_file(calib)}
    published = {"settings": wanda.settings().as_dict(), "pruning": {"calibration": calibration}}
    assert _published_identity(published, identity) == identity
    assert _published_identity({**published, "pruning": {}}, identity) != identity
    calib.write_text('{"text": "w1 w2 w4"}\n')
    assert wanda.identity() != identity  # an edited file at the same path is another artifact
    assert "calibration_samples" not in Artifact("org/a", "magnitude", 0.5, extra).identity()  # reads none


def test_an_explicit_repo_id_gets_the_structure_in_its_name_too():
    artifact = Artifact("./m", "wanda", 0.5, (("structure", "2:4"),), "r1", "lab/My-Model")
    assert artifact.repo_id("ignored") == "lab/My-Model-wanda-s50-2of4-r1"
    assert Artifact("./m", "magnitude", 0.3, (), None, "lab/My-Model").repo_id("x") == "lab/My-Model-magnitude-s30"
