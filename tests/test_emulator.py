"""The Hub emulator, driven end to end by the real ``huggingface_hub`` client (LFS path, Xet off)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from publisher.emulator import HubEmulator

# huggingface_hub's own LFS PUT passes raw bytes as `data=`, which httpx2 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

USER = "test-user"
WRITE_TOKEN = "hf_test_write_token"
READ_TOKEN = "hf_test_read_token"
REPO = f"{USER}/pruned-model"
README = "---\nlicense: apache-2.0\ntags:\n- pruned\n---\n# Pruned model\n\nResearch only.\n"


def write_api(hub: HubEmulator) -> HfApi:
    return HfApi(endpoint=hub.url, token=WRITE_TOKEN)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_checkpoint(folder: Path, seed: int = 0) -> dict[str, str]:
    """A small model folder (card, config, two ~3 MB weight shards, a nested file); path -> sha256."""
    rng = random.Random(seed)
    files = {
        "README.md": README.encode(),
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 64}).encode(),
        "model-00001-of-00002.safetensors": rng.randbytes(3 * 1024 * 1024),
        "model-00002-of-00002.safetensors": rng.randbytes(3 * 1024 * 1024 + 17),
        "extra/eval/results.json": b'{"perplexity": 12.5}',
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


def raw_request(
    url: str, method: str = "GET", body: bytes | None = None, token: str | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP request (no client library): status, headers, body."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_client_runs_without_xet() -> None:
    assert constants.HF_HUB_DISABLE_XET, "tests/conftest.py must set HF_HUB_DISABLE_XET before the import"


def test_round_trip(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    folder = tmp_path / "checkpoint"
    expected = make_checkpoint(folder)

    repo_url = api.create_repo(REPO)
    assert repo_url.repo_id == REPO
    info = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="Upload pruned model")
    assert len(info.oid) == 40

    assert sorted(api.list_repo_files(REPO)) == sorted(expected)
    top = {entry.path: entry for entry in api.list_repo_tree(REPO)}
    assert set(top) == {"README.md", "config.json", "extra", *(p for p in expected if p.endswith(".safetensors"))}
    assert type(top["extra"]).__name__ == "RepoFolder"
    shard = top["model-00001-of-00002.safetensors"]
    assert shard.lfs is not None and shard.lfs.sha256 == expected[shard.path] and shard.size == 3 * 1024 * 1024
    assert top["config.json"].lfs is None
    nested = [entry.path for entry in api.list_repo_tree(REPO, path_in_repo="extra", recursive=True)]
    assert nested == ["extra/eval", "extra/eval/results.json"]

    model = api.model_info(REPO, files_metadata=True)
    assert model.sha == info.oid and model.private is False
    sizes = {s.rfilename: s.size for s in model.siblings}
    assert sizes["model-00002-of-00002.safetensors"] == 3 * 1024 * 1024 + 17

    local = Path(snapshot_download(REPO, endpoint=hub.url, token=WRITE_TOKEN, cache_dir=tmp_path / "cache"))
    downloaded = {p.relative_to(local).as_posix(): sha256_of(p) for p in local.rglob("*") if p.is_file()}
    assert downloaded == expected


def test_reupload_of_same_folder_makes_no_commit(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    make_checkpoint(tmp_path / "ckpt")
    api.create_repo(REPO)
    first = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    commits = api.list_repo_commits(REPO)

    second = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt")
    assert second.oid == first.oid
    assert [c.commit_id for c in api.list_repo_commits(REPO)] == [c.commit_id for c in commits]
    assert len(commits) == 2  # the initial commit and the upload


def test_stale_parent_commit_is_rejected(hub: HubEmulator) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    initial = api.model_info(REPO).sha
    head = api.upload_file(path_or_fileobj=b"v1", path_in_repo="notes.txt", repo_id=REPO).oid

    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_commit(
            REPO,
            operations=[CommitOperationAdd("notes.txt", b"v2")],
            commit_message="stale",
            parent_commit=initial,
        )
    assert excinfo.value.response.status_code == 412
    assert api.model_info(REPO).sha == head


def test_concurrent_commits_on_same_parent_only_one_wins(hub: HubEmulator) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    parent = api.model_info(REPO).sha
    outcomes: list[object] = []

    def commit(n: int) -> None:
        try:
            op = CommitOperationAdd(f"file-{n}.txt", str(n).encode())
            outcomes.append(api.create_commit(REPO, operations=[op], commit_message=f"c{n}", parent_commit=parent))
        except HfHubHTTPError as err:
            outcomes.append(err.response.status_code)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o for o in outcomes if isinstance(o, int)) == [412, 412, 412]
    assert len(api.list_repo_files(REPO)) == 1


def test_tag_branch_with_slash_and_refs(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    main_head = api.upload_file(path_or_fileobj=b"{}", path_in_repo="config.json", repo_id=REPO).oid
    api.create_tag(REPO, tag="v1.0", tag_message="first release")
    api.create_branch(REPO, branch="pruned/50pct")
    api.create_branch(REPO, branch="pruned/50pct", exist_ok=True)
    weights = b"\0\1" * 1000
    branch_head = api.upload_file(
        path_or_fileobj=weights, path_in_repo="w.safetensors", repo_id=REPO, revision="pruned/50pct"
    ).oid

    refs = api.list_repo_refs(REPO)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": main_head, "pruned/50pct": branch_head}
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", main_head)]

    assert api.file_exists(REPO, "w.safetensors", revision="pruned/50pct")
    assert not api.file_exists(REPO, "w.safetensors")
    path = hf_hub_download(
        REPO, "w.safetensors", revision="pruned/50pct", endpoint=hub.url, token=WRITE_TOKEN, cache_dir=tmp_path
    )
    assert Path(path).read_bytes() == weights
    assert api.model_info(REPO, revision="v1.0").sha == main_head
    assert [c.title for c in api.list_repo_commits(REPO, revision="pruned/50pct")][0].startswith("Upload")

    api.delete_branch(REPO, branch="pruned/50pct")
    api.delete_tag(REPO, tag="v1.0")
    refs = api.list_repo_refs(REPO)
    assert [b.name for b in refs.branches] == ["main"] and refs.tags == []


def test_create_pr_upload(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    main_head = api.model_info(REPO).sha
    info = api.upload_file(path_or_fileobj=b"# card", path_in_repo="README.md", repo_id=REPO, create_pr=True)
    assert info.pr_num == 1 and info.pr_revision == "refs/pr/1"
    assert api.model_info(REPO).sha == main_head
    assert api.file_exists(REPO, "README.md", revision="refs/pr/1")
    assert not api.file_exists(REPO, "README.md")

    details = api.get_discussion_details(REPO, 1)
    assert details.is_pull_request and details.target_branch == "refs/heads/main" and details.status == "open"

    pr = api.create_pull_request(REPO, title="Second proposal")
    assert pr.num == 2 and pr.git_reference == "refs/pr/2"
    api.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO, revision=pr.git_reference)
    path = hf_hub_download(REPO, "x.txt", revision="refs/pr/2", endpoint=hub.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"x"
    refs = api.list_repo_refs(REPO, include_pull_requests=True)
    assert [p.ref for p in refs.pull_requests or []] == ["refs/pr/1", "refs/pr/2"]


def test_missing_repo_file_and_revision(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    assert not api.repo_exists(f"{USER}/nope")
    api.create_repo(REPO)
    assert api.repo_exists(REPO)
    assert not api.file_exists(REPO, "missing.bin")
    assert not api.revision_exists(REPO, "no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "x.txt", revision="no/such", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin", endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(REPO, path_in_repo="no-folder"))
    with pytest.raises(RepositoryNotFoundError):
        api.list_repo_files(f"{USER}/nope")

    api.delete_repo(REPO)
    assert not api.repo_exists(REPO)
    api.delete_repo(REPO, missing_ok=True)


def test_whoami(hub: HubEmulator) -> None:
    me = write_api(hub).whoami()
    assert me["name"] == USER and me["auth"]["accessToken"]["role"] == "write"
    assert HfApi(endpoint=hub.url, token=READ_TOKEN).whoami()["auth"]["accessToken"]["role"] == "read"


def test_whoami_without_or_with_bad_token_fails(hub: HubEmulator) -> None:
    status, headers, body = raw_request(f"{hub.url}/api/whoami-v2")
    assert status == 401 and "error" in json.loads(body) and int(headers["Content-Length"]) == len(body)
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url, token="hf_not_a_token").whoami()
    assert excinfo.value.response.status_code == 401


def test_write_access_needs_a_write_token_for_own_namespace(hub: HubEmulator) -> None:
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url, token=READ_TOKEN).create_repo(REPO)
    assert excinfo.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as excinfo:
        write_api(hub).create_repo("someone-else/model")
    assert excinfo.value.response.status_code == 403
    write_api(hub).create_repo(REPO)
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url, token=False).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=REPO)
    assert excinfo.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url, token=READ_TOKEN).create_branch(REPO, branch="dev")
    assert excinfo.value.response.status_code == 403


def test_private_repo_is_invisible_without_token(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    api.create_repo(REPO, private=True)
    api.upload_file(path_or_fileobj=b"secret", path_in_repo="s.txt", repo_id=REPO)
    assert api.model_info(REPO).private is True
    anonymous = HfApi(endpoint=hub.url, token=False)
    assert not anonymous.repo_exists(REPO)
    assert not HfApi(endpoint=hub.url, token="hf_unknown").repo_exists(REPO)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "s.txt", endpoint=hub.url, token=False, cache_dir=tmp_path)
    assert HfApi(endpoint=hub.url, token=READ_TOKEN).repo_exists(REPO)  # the owner's read token


def test_create_repo_exist_ok_and_conflict(hub: HubEmulator) -> None:
    api = write_api(hub)
    first = api.create_repo(REPO)
    assert api.create_repo(REPO, exist_ok=True) == first
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_repo(REPO)
    assert excinfo.value.response.status_code == 409
    assert excinfo.value.response.json()["url"] == first


def test_restart_on_same_root_keeps_repos(tmp_path: Path) -> None:
    tokens = {WRITE_TOKEN: (USER, "write")}
    with HubEmulator(root=tmp_path / "hub", tokens=tokens) as hub:
        api = write_api(hub)
        api.create_repo(REPO)
        head = api.upload_file(path_or_fileobj=b"\0weights", path_in_repo="w.bin", repo_id=REPO).oid
        api.create_branch(REPO, branch="pruned/25pct")
    with HubEmulator(root=tmp_path / "hub", tokens=tokens) as hub:
        api = write_api(hub)
        assert api.model_info(REPO).sha == head
        assert {b.name for b in api.list_repo_refs(REPO).branches} == {"main", "pruned/25pct"}
        path = hf_hub_download(REPO, "w.bin", endpoint=hub.url, cache_dir=tmp_path / "cache")
        assert Path(path).read_bytes() == b"\0weights"


# --------------------------------------------------------------------------- wire-level details


def test_typed_errors_and_headers_on_the_wire(hub: HubEmulator) -> None:
    write_api(hub).create_repo(REPO)
    status, headers, body = raw_request(f"{hub.url}/api/models/{USER}/nope")
    assert (status, headers["X-Error-Code"]) == (404, "RepoNotFound") and json.loads(body)["error"]
    status, headers, _ = raw_request(f"{hub.url}/api/models/{REPO}/revision/a%2Fb")
    assert (status, headers["X-Error-Code"]) == (404, "RevisionNotFound")
    status, headers, _ = raw_request(f"{hub.url}/{REPO}/resolve/main/none.txt", method="HEAD")
    assert (status, headers["X-Error-Code"], len(headers["X-Repo-Commit"])) == (404, "EntryNotFound", 40)
    status, headers, _ = raw_request(f"{hub.url}/api/models/{REPO}/xet-write-token/main", token=WRITE_TOKEN)
    assert status == 501
    status, _, body = raw_request(f"{hub.url}/api/validate-yaml", "POST", b'{"content": "---\\na: 1\\n"}')
    assert status == 400 and json.loads(body)["errors"]


def test_range_requests_and_resolve_headers(hub: HubEmulator) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    data = os.urandom(5000)
    api.upload_file(path_or_fileobj=data, path_in_repo="sub dir/w.safetensors", repo_id=REPO)
    url = f"{hub.url}/{REPO}/resolve/main/sub%20dir/w.safetensors"
    status, headers, _ = raw_request(url, method="HEAD")
    assert status == 200 and headers["X-Linked-Etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert headers["X-Linked-Size"] == headers["Content-Length"] == "5000"
    status, headers, body = raw_request(url, headers={"Range": "bytes=100-199"})
    assert (status, body, headers["Content-Range"]) == (206, data[100:200], "bytes 100-199/5000")
    status, _, body = raw_request(url, headers={"Range": "bytes=-10"})
    assert (status, body) == (206, data[-10:])
    status, headers, _ = raw_request(url, headers={"Range": "bytes=6000-"})
    assert status == 416 and headers["Content-Range"] == "bytes */5000"


def test_lfs_objects_must_be_uploaded_and_signed(hub: HubEmulator) -> None:
    write_api(hub).create_repo(REPO)
    oid = hashlib.sha256(b"never uploaded").hexdigest()
    lines = [
        {"key": "header", "value": {"summary": "bad", "description": ""}},
        {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": oid, "size": 14}},
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    url = f"{hub.url}/api/models/{REPO}/commit/main"
    status, _, _ = raw_request(url, "POST", body, WRITE_TOKEN, {"Content-Type": "application/x-ndjson"})
    assert status == 422

    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": 14}]}
    status, _, answer = raw_request(
        f"{hub.url}/{REPO}.git/info/lfs/objects/batch", "POST", json.dumps(batch).encode(), WRITE_TOKEN
    )
    href = json.loads(answer)["objects"][0]["actions"]["upload"]["href"]
    assert href.startswith(hub.url + "/")
    status, _, _ = raw_request(href.replace("sig=", "sig=0"), "PUT", b"never uploaded")
    assert status == 403
    status, _, _ = raw_request(href, "PUT", b"something else")
    assert status == 400
    status, _, _ = raw_request(href, "PUT", b"never uploaded")
    assert status == 200
    status, _, _ = raw_request(url, "POST", body, WRITE_TOKEN, {"Content-Type": "application/x-ndjson"})
    assert status == 200
    assert (Path(hub.root) / "blobs" / oid).read_bytes() == b"never uploaded"


def test_deletes_paths_info_and_history(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    make_checkpoint(tmp_path / "ckpt")
    api.create_repo(REPO)
    api.upload_folder(repo_id=REPO, folder_path=tmp_path / "ckpt", commit_message="Upload v1")
    infos = {i.path: i for i in api.get_paths_info(REPO, ["config.json", "extra", "missing.txt"])}
    assert set(infos) == {"config.json", "extra"} and type(infos["extra"]).__name__ == "RepoFolder"

    api.delete_file("config.json", REPO)
    api.delete_folder("extra", REPO)
    with pytest.raises(EntryNotFoundError):
        api.delete_file("config.json", REPO)
    assert sorted(api.list_repo_files(REPO)) == ["README.md"] + [f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    titles = [c.title for c in api.list_repo_commits(REPO)]
    assert titles[2:] == ["Upload v1", "initial commit"] and len(titles) == 4


def test_dataset_repos(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    url = api.create_repo(f"{USER}/calib", repo_type="dataset")
    assert url.repo_type == "dataset" and url.endswith("/datasets/test-user/calib")
    api.upload_file(
        path_or_fileobj=b"a,b\n1,2\n", path_in_repo="data.csv", repo_id=f"{USER}/calib", repo_type="dataset"
    )
    assert not api.repo_exists(f"{USER}/calib")  # a model of that name does not exist
    local = snapshot_download(f"{USER}/calib", repo_type="dataset", endpoint=hub.url, cache_dir=tmp_path)
    assert (Path(local) / "data.csv").read_bytes() == b"a,b\n1,2\n"


def test_request_log_is_quiet_and_never_shows_tokens(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    tokens = {WRITE_TOKEN: (USER, "write")}
    with HubEmulator(root=tmp_path / "quiet", tokens=tokens) as hub:
        write_api(hub).create_repo(REPO)
    assert capfd.readouterr().err == ""
    with HubEmulator(root=tmp_path / "loud", tokens=tokens, verbose=True) as hub:
        write_api(hub).create_repo(REPO)
        write_api(hub).upload_file(path_or_fileobj=b"\0", path_in_repo="w.bin", repo_id=REPO)
    err = capfd.readouterr().err
    assert "POST /api/repos/create -> 200" in err and WRITE_TOKEN not in err and "sig=" not in err


def test_chunked_request_body_is_accepted(hub: HubEmulator) -> None:
    import http.client

    write_api(hub).create_repo(REPO)
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    body = json.dumps({"tag": "v0"}).encode()
    conn.request(
        "POST",
        f"/api/models/{REPO}/tag/main",
        body=iter([body[:5], body[5:]]),
        headers={"Authorization": f"Bearer {WRITE_TOKEN}", "Transfer-Encoding": "chunked"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b"{}"
    conn.request("GET", f"/api/models/{REPO}/refs")  # same kept-alive connection
    assert json.loads(conn.getresponse().read())["tags"][0]["name"] == "v0"
    conn.close()


# ---------------------------------------------------------------------- settings, collections, refs with '/'


def test_gated_and_visibility_settings(hub: HubEmulator) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    assert api.model_info(REPO).gated is False
    api.update_repo_settings(REPO, gated="manual")
    assert api.model_info(REPO).gated == "manual"
    api.update_repo_settings(REPO, gated=False, private=True)
    info = api.model_info(REPO)
    assert info.gated is False and info.private is True
    assert not HfApi(endpoint=hub.url, token=False).repo_exists(REPO)
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url, token=READ_TOKEN).update_repo_settings(REPO, gated="auto")
    assert excinfo.value.response.status_code == 403
    status, _, _ = raw_request(f"{hub.url}/api/models/{REPO}/settings", "PUT", b'{"gated": "yes"}', WRITE_TOKEN)
    assert status == 400


def test_collections_create_find_add_once_and_delete(hub: HubEmulator) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    created = api.create_collection("Pruned models", description="tiny")
    assert created.slug.startswith(f"{USER}/pruned-models-") and created.items == [] and created.position == 0
    again = api.create_collection("Pruned models", exists_ok=True)
    assert again.slug == created.slug
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_collection("Pruned models")
    assert excinfo.value.response.status_code == 409

    updated = api.add_collection_item(created.slug, item_id=REPO, item_type="model", note="s50")
    assert [(i.item_id, i.item_type, i.note) for i in updated.items] == [(REPO, "model", "s50")]
    api.add_collection_item(created.slug, item_id=REPO, item_type="model", exists_ok=True)
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.add_collection_item(created.slug, item_id=REPO, item_type="model")
    assert excinfo.value.response.status_code == 409
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.add_collection_item(created.slug, item_id=f"{USER}/missing", item_type="model")
    assert excinfo.value.response.status_code == 404

    listed = list(api.list_collections(owner=USER))
    assert [c.slug for c in listed] == [created.slug] and listed[0].position == 0
    assert [c.slug for c in api.list_collections(item=f"models/{REPO}")] == [created.slug]
    assert list(api.list_collections(owner="someone-else")) == []
    item = api.get_collection(created.slug).items[0]
    api.delete_collection_item(created.slug, item.item_object_id)
    assert api.get_collection(created.slug).items == []

    private = api.create_collection("Hidden", private=True)
    assert [c.title for c in HfApi(endpoint=hub.url, token=False).list_collections(owner=USER)] == ["Pruned models"]
    with pytest.raises(HfHubHTTPError):
        HfApi(endpoint=hub.url, token=False).get_collection(private.slug)
    with pytest.raises(HfHubHTTPError) as excinfo:
        HfApi(endpoint=hub.url, token=READ_TOKEN).delete_collection(created.slug)
    assert excinfo.value.response.status_code == 403
    api.delete_collection(created.slug)
    api.delete_collection(created.slug, missing_ok=True)
    assert [c.title for c in api.list_collections(owner=USER)] == ["Hidden"]


def test_tags_and_branches_with_slashes_round_trip(hub: HubEmulator, tmp_path: Path) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    head = api.upload_file(path_or_fileobj=b"v1", path_in_repo="notes.txt", repo_id=REPO).oid
    api.create_tag(REPO, tag="release/2026/s50", revision=head)
    api.create_branch(REPO, branch="exp/a/b", revision="release/2026/s50")
    refs = api.list_repo_refs(REPO)
    assert [(t.name, t.ref) for t in refs.tags] == [("release/2026/s50", "refs/tags/release/2026/s50")]
    assert {b.name: b.target_commit for b in refs.branches}["exp/a/b"] == head
    path = hf_hub_download(REPO, "notes.txt", revision="release/2026/s50", endpoint=hub.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == b"v1"
    with pytest.raises(HfHubHTTPError) as excinfo:
        api.create_tag(REPO, tag="release/2026/s50")
    assert excinfo.value.response.status_code == 409
    api.delete_tag(REPO, tag="release/2026/s50")
    assert api.list_repo_refs(REPO).tags == []


def test_commit_changes_and_request_log(hub: HubEmulator) -> None:
    from publisher.emulator import RepoId

    api = write_api(hub)
    api.create_repo(REPO)
    first = api.upload_file(path_or_fileobj=b"a", path_in_repo="a.txt", repo_id=REPO).oid
    second = api.create_commit(REPO, [CommitOperationAdd("a.txt", b"b"), CommitOperationAdd("c.txt", b"c")],
                               commit_message="two").oid
    repo = RepoId("model", *REPO.split("/"))
    assert hub.storage.changed_paths(repo, first) == {"a.txt": "added"}
    assert hub.storage.changed_paths(repo, second) == {"a.txt": "modified", "c.txt": "added"}
    commits = [r for r in hub.requests if r.path.endswith("/commit/main")]
    assert [(r.method, r.status) for r in commits] == [("POST", 200), ("POST", 200)]
    assert all("?" not in r.path for r in hub.requests)


# ---------------------------------------------------------------------- fault injection


def test_status_fault_answers_then_expires_and_filters_by_method(hub: HubEmulator) -> None:
    fault = hub.faults.add(r"/api/whoami-v2$", kind="status", status=503, times=2, method="GET")
    hub.faults.add(r"/api/whoami-v2$", kind="status", status=500, method="POST")  # never matches a GET
    for _ in range(2):
        status, headers, body = raw_request(f"{hub.url}/api/whoami-v2", token=WRITE_TOKEN)
        assert status == 503 and headers["Retry-After"] == "0" and "injected" in json.loads(body)["error"]
    assert fault.fired == 2 and fault.spent
    status, _, _ = raw_request(f"{hub.url}/api/whoami-v2", token=WRITE_TOKEN)
    assert status == 200 and len(hub.faults) == 1
    hub.faults.clear()
    assert len(hub.faults) == 0
    with pytest.raises(ValueError, match="Unknown fault kind"):
        hub.faults.add("/", kind="explode")


def test_drop_fault_hangs_up_after_some_bytes_and_stores_nothing(hub: HubEmulator) -> None:
    import http.client

    write_api(hub).create_repo(REPO)
    data = os.urandom(3 << 20)
    oid = hashlib.sha256(data).hexdigest()
    batch = {"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(data)}]}
    _, _, answer = raw_request(f"{hub.url}/{REPO}.git/info/lfs/objects/batch", "POST", json.dumps(batch).encode(),
                               WRITE_TOKEN)
    href = json.loads(answer)["objects"][0]["actions"]["upload"]["href"]
    fault = hub.faults.add(r"/lfs-upload/", kind="drop", after_bytes=1 << 20)
    conn = http.client.HTTPConnection(hub.host, hub.port, timeout=10)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        conn.request("PUT", href.removeprefix(hub.url), body=data)
        conn.getresponse()
    conn.close()
    assert fault.fired == 1 and hub.requests[-1].status == 0
    assert not (Path(hub.root) / "blobs" / oid).exists() and list((Path(hub.root) / "tmp").glob("upload-*")) == []
    status, _, _ = raw_request(href, "PUT", data)
    assert status == 200 and (Path(hub.root) / "blobs" / oid).exists()


def test_lose_response_applies_the_request_but_sends_nothing(hub: HubEmulator) -> None:
    api = write_api(hub)
    api.create_repo(REPO)
    hub.faults.add(r"/tag/main$", kind="lose_response")
    with pytest.raises(Exception) as excinfo:
        api.create_tag(REPO, tag="v1")
    assert "HTTPError" not in type(excinfo.value).__name__  # a transport error, not an HTTP status
    assert [t.name for t in api.list_repo_refs(REPO).tags] == ["v1"]


def test_delay_fault_holds_until_released(hub: HubEmulator) -> None:
    fault = hub.faults.add(r"/api/whoami-v2$", kind="delay", delay_s=30)
    answers: list[int] = []
    thread = threading.Thread(target=lambda: answers.append(raw_request(f"{hub.url}/api/whoami-v2",
                                                                        token=WRITE_TOKEN)[0]))
    thread.start()
    assert fault.wait_fired(10)
    time.sleep(0.2)
    assert answers == []
    fault.release()
    thread.join(10)
    assert answers == [200]
