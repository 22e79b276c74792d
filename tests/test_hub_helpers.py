"""Shared helpers of the tests/test_hub_*.py modules (no tests here): pruned run folders and emulator views.

A pruned tiny Llama run is built once per (sparsity, base model) per session with the real pipeline, then
copied into each test's own folder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import HUB_WRITE_TOKEN
from huggingface_hub import HfApi
from tiny_models import save_tiny_model

from publisher.emulator import HubEmulator, RepoId
from publisher.hub.retry import RetryPolicy
from publisher.pipeline import RunOptions, RunOutcome, run_pipeline
from publisher.runner import load_run
from publisher.settings import RunSettings

README = "---\nlicense: mit\n---\n# tiny\n"
FAST = RetryPolicy(attempts=3, base_s=0.05, max_s=0.2)  # our own retries; the client's own wait >= 1 s
_TEMPLATES: dict[tuple, Path] = {}


def pruned_run(tmp_path_factory, dest: Path, *, sparsity: float = 0.5, base_model_id: str = "test-org/tiny",
               repo_id: str = "test-user/tiny-magnitude-s50") -> RunOutcome:
    """A finished run folder at `dest` (weights, config, tokenizer, results.json, README.md, plots)."""
    key = (sparsity, base_model_id, repo_id)
    if key not in _TEMPLATES:
        root = tmp_path_factory.mktemp("run-template")
        model_dir = save_tiny_model("llama", root / "base", readme=README)
        settings = RunSettings(model=str(model_dir), sparsity=sparsity, base_model_id=base_model_id)
        run_pipeline(settings, RunOptions(output_dir=root / "run", command="pytest", repo_id=repo_id, progress=False))
        _TEMPLATES[key] = root / "run"
    shutil.copytree(_TEMPLATES[key], dest)
    return load_run(dest)


def api_for(hub: HubEmulator, token: str = HUB_WRITE_TOKEN) -> HfApi:
    return HfApi(endpoint=hub.url, token=token)


def commits(hub: HubEmulator, repo_id: str, revision: str = "main") -> list[str]:
    """Commit ids from the head of `revision` back to the initial commit."""
    return [c.commit_id for c in api_for(hub).list_repo_commits(repo_id, revision=revision)]


def changed_in(hub: HubEmulator, repo_id: str, commit: str) -> dict[str, str]:
    """What a commit changed relative to its parent, as the emulator stored it."""
    namespace, name = repo_id.split("/")
    return hub.storage.changed_paths(RepoId("model", namespace, name), commit)


def lfs_puts(hub: HubEmulator, since: int = 0) -> list[str]:
    """The sha256 of every LFS object PUT completed (200) since request number `since`."""
    return [r.path.rsplit("/", 1)[-1] for r in hub.requests[since:]
            if r.method == "PUT" and r.path.startswith("/lfs-upload/") and r.status == 200]


def leftover_uploads(hub: HubEmulator) -> list[Path]:
    """Partial uploads the emulator still holds (must be none once a request ended)."""
    return list((Path(hub.root) / "tmp").glob("upload-*"))


def test_a_dataset_move_check_that_failed_is_asked_again(monkeypatch):
    """A stall keeps what a stage made, once: the next check asks the Hub again (only answers are kept)."""
    from publisher import hub_data

    answers = iter([TimeoutError("stalled"), "c2"])

    def commit(name, revision):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(hub_data, "dataset_commit", commit)
    monkeypatch.setattr(hub_data, "dataset_data_files", lambda name, revision: {"data.parquet": revision})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(hub_data, "_ANSWERS", {})
    assert hub_data.moved_dataset("org/data", None, "c1") is None  # stalled: keep
    assert hub_data.moved_dataset("org/data", None, "c1") == "c2"  # asked again: moved
    assert hub_data.moved_dataset("org/data", None, "c1") == "c2"  # kept: no third call
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    assert hub_data.moved_dataset("org/data", None, "c0") is None  # offline: no call at all
