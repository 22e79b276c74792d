"""Network faults during a push (injected in the emulator, never by mocking the client): retried, never half-done.

Each client-side retry of `huggingface_hub` waits at least 1 s, so every fault here fires once or twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import HUB_USER, HUB_WRITE_TOKEN
from test_hub_helpers import FAST, api_for, changed_in, commits, leftover_uploads, lfs_puts

from publisher.errors import PublishError
from publisher.hub.publish import PushOptions, publish_run
from publisher.hub.retry import RetryPolicy, http_timeouts
from publisher.results import FileDigest

REPO = f"{HUB_USER}/faulty"
CARD = "---\nlicense: mit\ntags:\n- research-only\n---\n<!-- generated-by: publish-pruned -->\n# faulty\n"
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def make_run(folder: Path, seed: int = 0, big_mb: int = 2) -> dict[str, FileDigest]:
    """A run-shaped folder (card, config, weight files of `big_mb` MB and 1 MB); returns the digests."""
    rng = __import__("random").Random(seed)
    data = {"README.md": CARD.encode(), "config.json": b'{"model_type": "llama"}',
            "model-00001-of-00002.safetensors": rng.randbytes(big_mb << 20),
            "model-00002-of-00002.safetensors": rng.randbytes(1 << 20)}
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in data.items():
        (folder / name).write_bytes(blob)
    return {name: FileDigest(hashlib.sha256(blob).hexdigest(), len(blob)) for name, blob in data.items()}


def push(hub, folder, files, policy=FAST):
    return publish_run(api_for(hub), REPO, folder, files, private=False, message="Publish faulty",
                       options=PushOptions(retry=policy))


def assert_complete(hub, files, record):
    assert commits(hub, REPO) == [record.commit, commits(hub, REPO)[-1]]  # exactly one commit after the initial
    assert set(changed_in(hub, REPO, record.commit)) == set(files)
    assert leftover_uploads(hub) == []


BIG = "/lfs-upload/{big}"  # the 2 MB shard
FAULTS = {
    "drop-mid-lfs-upload": dict(path_regex=BIG, kind="drop", after_bytes=1 << 20),  # client retries the PUT
    "500-on-lfs-upload": dict(path_regex=BIG, kind="status", status=500),  # client retries the PUT
    "429-on-preupload": dict(path_regex=r"/preupload/", kind="status", status=429),  # client retries
    "503-on-commit": dict(path_regex=r"/commit/", kind="status", status=503, times=2),  # we retry
    "drop-on-commit": dict(path_regex=r"/commit/", kind="drop", after_bytes=10),  # we retry
    "500-on-validate-yaml": dict(path_regex=r"/validate-yaml", kind="status", status=500),  # we retry
    "429-on-repo-info": dict(path_regex=r"/revision/main$", kind="status", status=429),  # we retry
    "drop-on-tree": dict(path_regex=r"/tree/", kind="drop"),  # we retry
}


@pytest.mark.parametrize("fault", FAULTS.values(), ids=FAULTS.keys())
def test_each_fault_is_retried_and_the_push_completes_once(hub, tmp_path, fault):
    files = make_run(tmp_path / "run")
    big = files["model-00001-of-00002.safetensors"].sha256
    injected = hub.faults.add(**dict(fault, path_regex=fault["path_regex"].format(big=big)))
    record = push(hub, tmp_path / "run", files)
    assert injected.fired == injected.times
    assert record.changed and record.verified_files == len(files)
    assert_complete(hub, files, record)
    lfs = [d.sha256 for n, d in files.items() if n.endswith(".safetensors")]
    puts = lfs_puts(hub)
    assert sorted(set(puts)) == sorted(lfs) and len(puts) == len(lfs)  # no object stored twice


def test_a_lost_commit_answer_is_recognised_not_repeated(hub, tmp_path):
    files = make_run(tmp_path / "run")
    lost = hub.faults.add(r"/commit/main$", kind="lose_response")
    record = push(hub, tmp_path / "run", files)
    assert lost.fired == 1 and record.changed
    assert_complete(hub, files, record)


def test_a_stalled_commit_times_out_and_is_retried_without_a_second_commit(hub, tmp_path):
    """The stalled commit is applied late (after the retry won): parentCommit makes it fail, not double up."""
    files = make_run(tmp_path / "run")
    stalled = hub.faults.add(r"/commit/main$", kind="delay", delay_s=3)
    with http_timeouts(0.5):  # the commit POST uses the client's default timeout (repo_info etc. pass None)
        started = time.monotonic()
        record = push(hub, tmp_path / "run", files)
    assert stalled.fired == 1 and time.monotonic() - started < 3
    stalled.release()  # the stalled request now reaches the storage, with a parent that is no longer the head
    deadline = time.monotonic() + 5
    while not any(r.path.endswith("/commit/main") and r.status == 412 for r in hub.requests):
        assert time.monotonic() < deadline, hub.requests
        time.sleep(0.05)
    assert_complete(hub, files, record)


def test_persistent_failure_leaves_nothing_behind(hub, tmp_path):
    files = make_run(tmp_path / "run")
    hub.faults.add(r"/commit/", kind="status", status=500, times=2)
    with pytest.raises(PublishError, match="nothing was committed: .*500"):
        push(hub, tmp_path / "run", files, policy=RetryPolicy(attempts=2, base_s=0.05))
    assert not api_for(hub).repo_exists(REPO)  # the repo this push created is gone again
    assert leftover_uploads(hub) == []
    record = push(hub, tmp_path / "run", files)  # the next try re-uses the stored LFS objects
    assert len(lfs_puts(hub)) == 2 and record.changed


def test_a_failure_between_creating_the_repo_and_committing_leaves_no_empty_repo(hub, tmp_path):
    files = make_run(tmp_path / "run")
    hub.faults.add(r"/tree/", kind="status", status=403, times=3)  # listing the new repo's files
    with pytest.raises(PublishError, match="cannot prepare .*403"):
        push(hub, tmp_path / "run", files)
    assert any(r.path.endswith("/api/repos/create") for r in hub.requests)  # it had been created
    assert not api_for(hub).repo_exists(REPO)


ABORTED_PUSH = """
import json, sys
from pathlib import Path
from huggingface_hub import HfApi
from publisher.hub.publish import publish_run
from publisher.results import FileDigest
endpoint, repo_id, folder, files = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
publish_run(HfApi(endpoint=endpoint), repo_id, folder, {k: FileDigest(**v) for k, v in files.items()},
            private=False, message="Publish faulty")
"""


def test_a_killed_push_resumes_without_re_uploading_and_was_never_visible(hub, tmp_path):
    files = make_run(tmp_path / "run", big_mb=48)  # more than the socket buffers hold: the kill cuts it short
    small = files["model-00002-of-00002.safetensors"].sha256
    big = files["model-00001-of-00002.safetensors"].sha256
    held = hub.faults.add(f"/lfs-upload/{big}", kind="delay", delay_s=60)
    env = {**os.environ, "HF_TOKEN": HUB_WRITE_TOKEN, "HF_HUB_DISABLE_XET": "1"}
    digests = json.dumps({k: vars(v) for k, v in files.items()})
    argv = [sys.executable, "-c", ABORTED_PUSH, hub.url, REPO, str(tmp_path / "run"), digests]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert held.wait_fired(60), proc.stderr.read1().decode() if proc.poll() is not None else "no upload"
        deadline = time.monotonic() + 30
        while small not in lfs_puts(hub) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert small in lfs_puts(hub)
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs
        proc.wait()
    held.release()  # the held PUT now reads what reached the server, then the end of a dead connection
    deadline = time.monotonic() + 10
    while not any(r.path == f"/lfs-upload/{big}" for r in hub.requests):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [r.status for r in hub.requests if r.path == f"/lfs-upload/{big}"] != [200]
    assert not (Path(hub.root) / "blobs" / big).exists() and leftover_uploads(hub) == []
    assert [f for f in api_for(hub).list_repo_files(REPO) if f != ".gitattributes"] == []  # nothing visible
    assert len(commits(hub, REPO)) == 1
    mark = len(hub.requests)
    record = push(hub, tmp_path / "run", files)
    assert lfs_puts(hub, mark) == [big]  # the stored object was not sent again
    assert_complete(hub, files, record)
